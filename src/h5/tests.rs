use super::*;

#[test]
fn peek() {
    let rows = ndarray::Array1::from_vec(vec![
        Record::new("chr1234567", i32::MIN, 0.1, i32::MAX, 0).unwrap(),
        Record::new("x", 5, f32::NAN, 1, 2).unwrap(),
        Record::new("y\"z\\", 5, -0.0, 1, 2).unwrap(),
        Record::new("q", 5, f32::from_bits(1), 1, 2).unwrap(),
    ]);
    let w = Writer::create("/tmp/forkmap-peek.h5").unwrap();
    w.write_records("data1", rows.view()).unwrap();
    w.write_records("empty", rows.slice(ndarray::s![0..0]))
        .unwrap();
    w.close().unwrap();
}
