use super::*;

#[tokio::test]
async fn round_trip() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let mut w = PktWriter::new(a);
    w.data(b"hello\n").await.unwrap();
    w.data(b"").await.unwrap();
    w.delim().await.unwrap();
    w.data(&vec![7u8; MAX_PKT_DATA]).await.unwrap();
    w.flush_pkt().await.unwrap();
    w.raw(b"PACKrest").await.unwrap();
    drop(w);
    let mut r = PktReader::new(b);
    assert_eq!(
        r.read_packet().await.unwrap(),
        Some(Packet::Data(b"hello\n".to_vec()))
    );
    assert_eq!(r.read_packet().await.unwrap(), Some(Packet::Data(vec![])));
    assert_eq!(r.read_packet().await.unwrap(), Some(Packet::Delim));
    assert_eq!(
        r.read_packet().await.unwrap(),
        Some(Packet::Data(vec![7u8; MAX_PKT_DATA]))
    );
    assert_eq!(r.read_packet().await.unwrap(), Some(Packet::Flush));
    // Nothing after the last packet was consumed.
    let mut rest = Vec::new();
    r.get_mut().read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"PACKrest");
}

#[test]
fn encoding() {
    assert_eq!(encode(b"a\n"), b"0006a\n");
    assert_eq!(encode(b""), b"0004");
    assert_eq!(sideband(2, b"hi"), b"0007\x02hi");
    let big = vec![b'x'; MAX_SIDEBAND_DATA + 10];
    let framed = sideband(1, &big);
    assert_eq!(&framed[..5], b"fff0\x01");
    assert_eq!(framed.len(), 5 + MAX_SIDEBAND_DATA + 5 + 10);
    assert_eq!(
        &framed[5 + MAX_SIDEBAND_DATA..5 + MAX_SIDEBAND_DATA + 5],
        b"000f\x01"
    );
    assert_eq!(KEEPALIVE, &sideband(1, b"")[..]);
    assert!(sideband(1, b"").len() == 5);
}

#[tokio::test]
async fn refuses_bad_input() {
    for bad in [&b"00"[..], b"zzzz", b"0003", b"fff1", b"0009abc"] {
        let mut r = PktReader::new(bad);
        assert!(
            r.read_packet().await.is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let mut r = PktReader::new(&b""[..]);
    assert_eq!(r.read_packet().await.unwrap(), None);
}
