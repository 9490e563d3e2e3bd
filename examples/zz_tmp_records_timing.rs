//! temporary timing
fn main() -> Result<(), forkmap::Error> {
    let path = std::path::Path::new("/tmp/forkmap-timing.txt");
    let mut best = (u128::MAX, u128::MAX);
    for _ in 0..15 {
        let t = std::time::Instant::now();
        let a = forkmap::records::load(path)?;
        let t1 = t.elapsed().as_micros();
        let t = std::time::Instant::now();
        let s = forkmap::records::load_shared(path)?;
        let t2 = t.elapsed().as_micros();
        assert_eq!(a.len(), s.len());
        best = (best.0.min(t1), best.1.min(t2));
    }
    println!("best load {} us  load_shared {} us", best.0, best.1);
    Ok(())
}
