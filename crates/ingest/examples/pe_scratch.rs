fn main() {
    let bytes = std::fs::read("/work/shared/data/docs/pdf/simple1.pdf").unwrap();
    let r = lopdf::Document::load_mem(&bytes);
    println!("{:?}", r.as_ref().err());
    let mut b = bytes.clone();
    b.extend_from_slice(b"\nxref\n0 8\n0000000000 65535 f\r\n");
    let doc = lopdf::Document::load_mem(&bytes);
    println!("{:?}", doc.as_ref().map(|d| d.objects.len()).err());
}
