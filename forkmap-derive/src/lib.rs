//! `#[derive(Row)]` for forkmap: use it as `#[derive(forkmap::Row)]` (forkmap re-exports
//! it), not from this crate. The documentation and the compile-fail examples live on
//! `forkmap::row`.
//!
//! The macro reads a `#[repr(C)]` struct with named fields and generates, in the user's
//! crate, an `unsafe impl ::forkmap::row::Row` whose field table takes every offset from
//! `offset_of!` and every kind from the field type's `::forkmap::row::Field` impl, a
//! monomorphised parser (one `Tokens::get` per column, no serde), and the HDF5 and `.npy`
//! element impls through forkmap's hidden macros (so they follow forkmap's features, not
//! the user's). Fields named with a leading `_` or marked `#[row(skip)]` are padding: not
//! columns, zero after parsing.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, parse_macro_input};

/// Derives `forkmap::row::Row` (see `forkmap::row`).
#[proc_macro_derive(Row, attributes(row))]
pub fn derive_row(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let name = &input.ident;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "#[derive(forkmap::Row)] needs a struct without generic parameters: a row's \
             layout must be fixed to describe it to numpy and HDF5",
        ));
    }
    check_repr(input)?;
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => &named.named,
            _ => {
                return Err(syn::Error::new(
                    name.span(),
                    "#[derive(forkmap::Row)] needs named fields: they name the columns",
                ));
            }
        },
        _ => {
            return Err(syn::Error::new(
                name.span(),
                "#[derive(forkmap::Row)] works on structs only (a row is a #[repr(C)] struct)",
            ));
        }
    };

    let mut specs = Vec::new();
    let mut inits = Vec::new();
    let mut column = 0usize;
    for field in fields {
        let ident = field.ident.as_ref().expect("named fields have names");
        let ty = &field.ty;
        let text = ident.to_string();
        let text = text.strip_prefix("r#").unwrap_or(&text).to_string();
        if is_skipped(field)? || text.starts_with('_') {
            inits.push(quote! {
                #ident: ::forkmap::__private::bytemuck::Zeroable::zeroed()
            });
            continue;
        }
        let k = column;
        column += 1;
        specs.push(quote! {
            ::forkmap::row::FieldSpec {
                name: #text,
                offset: ::core::mem::offset_of!(#name, #ident),
                kind: <#ty as ::forkmap::row::Field>::KIND,
            }
        });
        inits.push(quote! { #ident: tokens.get::<#ty>(#k)? });
    }
    if column == 0 {
        return Err(syn::Error::new(
            name.span(),
            "#[derive(forkmap::Row)] needs at least one column: every field is padding \
             (a leading `_` or #[row(skip)])",
        ));
    }

    Ok(quote! {
        const _: () = {
            // SAFETY: every offset comes from `offset_of!` and every kind from the field
            // type's own `Field` impl, so the table describes this type's real layout.
            unsafe impl ::forkmap::row::Row for #name {
                const FIELDS: &'static [::forkmap::row::FieldSpec] = &[#(#specs),*];

                #[inline]
                fn parse(
                    tokens: &::forkmap::row::Tokens<'_>,
                ) -> ::core::result::Result<Self, ::forkmap::row::BadField> {
                    ::core::result::Result::Ok(Self { #(#inits),* })
                }
            }
            ::forkmap::__private::row_h5!(#name);
            ::forkmap::__private::row_npy!(#name);
        };
    })
}

/// Accepts `#[repr(C)]` (with `align(N)` beside it), rejects anything else.
fn check_repr(input: &DeriveInput) -> syn::Result<()> {
    let mut c = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("repr")) {
        let mut bad: Option<(Span, String)> = None;
        attr.parse_nested_meta(|meta| {
            let word = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            match word.as_str() {
                "C" => c = true,
                "align" => {
                    // Consume `(N)`.
                    let content;
                    syn::parenthesized!(content in meta.input);
                    let _: syn::LitInt = content.parse()?;
                }
                _ => {
                    if meta.input.peek(syn::token::Paren) {
                        let content;
                        syn::parenthesized!(content in meta.input);
                        let _: proc_macro2::TokenStream = content.parse()?;
                    }
                    bad = Some((meta.path.span(), word));
                }
            }
            Ok(())
        })?;
        if let Some((span, word)) = bad {
            return Err(syn::Error::new(
                span,
                format!(
                    "#[derive(forkmap::Row)] needs plain #[repr(C)], not repr({word}): numpy \
                     and HDF5 read the row with C's field offsets"
                ),
            ));
        }
    }
    if !c {
        return Err(syn::Error::new(
            input.ident.span(),
            "#[derive(forkmap::Row)] needs #[repr(C)] on the struct: without it Rust may \
             reorder the fields, and numpy and HDF5 read them in C's layout",
        ));
    }
    Ok(())
}

/// Whether the field carries `#[row(skip)]`; any other `row` attribute is an error.
fn is_skipped(field: &syn::Field) -> syn::Result<bool> {
    let mut skip = false;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("row")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                skip = true;
                Ok(())
            } else {
                Err(meta.error("unknown row attribute: the only one is #[row(skip)] (padding)"))
            }
        })?;
    }
    Ok(skip)
}
