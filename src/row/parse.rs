//! The number and string parsers behind [`Field`](super::Field): checked by hand, with
//! fast paths for the plain decimals text files are made of, and exact (the tests compare
//! them with the standard library's parsers).

/// A decimal integer with an optional sign, as `int()` reads it: its magnitude and sign,
/// if the magnitude fits a `u64`.
#[inline]
pub(crate) fn sign_magnitude(token: &[u8]) -> Option<(bool, u64)> {
    let (negative, digits) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, token),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    // Up to 19 digits cannot overflow a u64; more need checked arithmetic.
    let (fast, slow) = digits.split_at(digits.len().min(19));
    for &b in fast {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        value = value * 10 + u64::from(d);
    }
    for &b in slow {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some((negative, value))
}

/// A signed integer of type `T`, if the token is one that fits.
#[inline]
pub(crate) fn parse_signed<T: TryFrom<i64>>(token: &[u8]) -> Option<T> {
    let (negative, magnitude) = sign_magnitude(token)?;
    let value = if negative {
        // -2^63 is the one magnitude that does not fit a positive i64.
        if magnitude == 1 << 63 {
            i64::MIN
        } else {
            -i64::try_from(magnitude).ok()?
        }
    } else {
        i64::try_from(magnitude).ok()?
    };
    T::try_from(value).ok()
}

/// An unsigned integer of type `T`, if the token is one that fits (`-0` included).
#[inline]
pub(crate) fn parse_unsigned<T: TryFrom<u64>>(token: &[u8]) -> Option<T> {
    let (negative, magnitude) = sign_magnitude(token)?;
    if negative && magnitude != 0 {
        return None;
    }
    T::try_from(magnitude).ok()
}

/// A plain decimal `[+-]digits[.digits]`: its sign, digits as an integer, and the number
/// of digits after the point, if it has 1 to 15 digits.
#[inline]
fn plain_decimal(token: &[u8]) -> Option<(bool, u64, usize)> {
    let (negative, rest) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, token),
    };
    if rest.is_empty() || rest.len() > 16 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut digits = 0;
    let mut fraction_digits = 0;
    let mut seen_point = false;
    for &b in rest {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                digits += 1;
                fraction_digits += usize::from(seen_point);
            }
            b'.' if !seen_point => seen_point = true,
            _ => return None,
        }
    }
    (digits > 0 && digits <= 15).then_some((negative, mantissa, fraction_digits))
}

/// A floating-point number, read exactly as `str::parse::<f32>` reads it (the nearest
/// `f32`; `inf`, `nan` and exponents accepted), with a fast path for plain decimals.
///
/// The fast path takes `m / 10^k` for up to 15 digits `m` and `k <= 8` fraction digits,
/// divides in `f64` and rounds to `f32`. That is exact: `m < 2^53` and `10^k` are exact
/// `f64` values, so the quotient is the nearest `f64` to `q = m / 10^k`, off by at most
/// 2^-53 relative. Rounding it again to `f32` gives the nearest `f32` to `q` unless
/// that error crosses a midpoint `M * 2^E` between two `f32` (`M` odd, `M < 2^25`); when
/// `q` is not itself such a midpoint it is further away than that: for `E >= 0`,
/// `|q - M 2^E| >= 10^-k`, at least 1/m > 2^-53 relative; for `E < 0`,
/// `|q - M 2^E| >= 10^-k 2^E`, at least 1/(M 10^k) >= 1/(2^25 10^8) > 2^-53 relative.
#[inline]
pub(crate) fn parse_f32(token: &[u8]) -> Option<f32> {
    if let Some((negative, mantissa, k)) = plain_decimal(token)
        && k <= 8
    {
        let value = (mantissa as f64 / POW10[k]) as f32;
        return Some(if negative { -value } else { value });
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// A floating-point number, read exactly as `str::parse::<f64>` reads it, with a fast
/// path for plain decimals: `m / 10^k` for `m < 2^53` and `k <= 22` is one correctly
/// rounded division of two exact `f64` values (Clinger's fast path), hence the nearest
/// `f64` to the decimal.
#[inline]
pub(crate) fn parse_f64(token: &[u8]) -> Option<f64> {
    if let Some((negative, mantissa, k)) = plain_decimal(token) {
        // 15 digits, so k <= 15 < 23.
        let value = mantissa as f64 / POW10[k];
        return Some(if negative { -value } else { value });
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

static POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// A boolean: `0`, `1`, `true`, `false`, `True`, `False`.
#[inline]
pub(crate) fn parse_bool(token: &[u8]) -> Option<bool> {
    match token {
        b"1" | b"true" | b"True" | b"TRUE" => Some(true),
        b"0" | b"false" | b"False" | b"FALSE" => Some(false),
        _ => None,
    }
}

/// The token `block[start..end]` as a NUL-padded `[u8; N]` (numpy's `S{N}`), if it has
/// at most `N` bytes, all printable ASCII. For `N <= 16` the value is built in a register
/// from a 16-byte window of the block: byte-wise copies into the array cost a
/// store-forwarding stall per row, a call to `memcpy` about as much.
#[inline]
pub(crate) fn parse_ascii<const N: usize>(
    block: &[u8],
    start: usize,
    end: usize,
) -> Option<[u8; N]> {
    let token = &block[start..end];
    let len = token.len();
    if len > N || !token.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    let mut out = [0u8; N];
    if N <= 16
        && let Some(window) = block.get(start..start + 16)
    {
        let word = u128::from_le_bytes(window.try_into().expect("16 bytes"));
        // len <= N <= 16: the mask keeps the token's bytes (all of them when len is 16).
        let mask = if len == 16 {
            u128::MAX
        } else {
            (1u128 << (8 * len)) - 1
        };
        let bytes = (word & mask).to_le_bytes();
        out.copy_from_slice(&bytes[..N]);
    } else {
        out[..len].copy_from_slice(token);
    }
    Some(out)
}

/// Why `token` is not a valid `[u8; n]` field.
#[cold]
pub(crate) fn ascii_problem(token: &[u8], n: usize) -> String {
    if token.len() > n {
        return format!("{} bytes, longer than {n}", token.len());
    }
    let bad = token.iter().find(|b| !b.is_ascii_graphic()).copied();
    format!(
        "a byte that is not printable ASCII (0x{:02x})",
        bad.unwrap_or(0)
    )
}
