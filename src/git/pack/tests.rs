use super::*;
use flate2::{Compress, Compression, FlushCompress};

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), true);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Finish)
        .unwrap();
    out
}

fn entry_header(ty: u8, mut size: u64) -> Vec<u8> {
    let mut out = vec![(ty << 4) | (size & 0x0f) as u8];
    size >>= 4;
    while size > 0 {
        *out.last_mut().unwrap() |= 0x80;
        out.push((size & 0x7f) as u8);
        size >>= 7;
    }
    out
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = vec![];
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn pack(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut p = b"PACK".to_vec();
    p.extend_from_slice(&2u32.to_be_bytes());
    p.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        p.extend_from_slice(e);
    }
    p.extend_from_slice(&[0xaa; 20]);
    p
}

fn blob(data: &[u8]) -> Vec<u8> {
    let mut e = entry_header(3, data.len() as u64);
    e.extend(deflate(data));
    e
}

fn ref_delta(result_size: u64) -> Vec<u8> {
    let mut d = varint(10);
    d.extend(varint(result_size));
    d.extend_from_slice(&[0x80 | 0x10, 5]); // copy from base
    let mut e = entry_header(OBJ_REF_DELTA, d.len() as u64);
    e.extend_from_slice(&[0x11; 20]);
    e.extend(deflate(&d));
    e
}

fn scan_bytewise(p: &[u8], max_obj: u64) -> (Result<usize, ScanError>, PackScanner) {
    let mut s = PackScanner::new(max_obj, 1 << 30);
    let mut total = 0;
    for chunk in p.chunks(1) {
        let mut off = 0;
        while off < chunk.len() && !s.is_done() {
            match s.feed(&chunk[off..]) {
                Ok(n) => off += n,
                Err(e) => return (Err(e), s),
            }
        }
        total += off;
    }
    if let Some(e) = s.refused() {
        return (Err(e.clone()), s);
    }
    (Ok(total), s)
}

#[test]
fn finds_pack_end() {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let p = pack(&[blob(b"hello"), blob(&big), ref_delta(5)]);
    let mut with_tail = p.clone();
    with_tail.extend_from_slice(b"garbage after the pack");
    let mut s = PackScanner::new(1 << 20, 1 << 30);
    assert_eq!(s.feed(&with_tail).unwrap(), p.len());
    assert!(s.is_done());
    assert_eq!(s.object_count(), 3);

    let (r, s) = scan_bytewise(&p, 1 << 20);
    assert_eq!(r.unwrap(), p.len());
    assert!(s.is_done());
}

#[test]
fn entry_types() {
    let a = blob(b"hello");
    let mut d = varint(5);
    d.extend(varint(5));
    d.extend_from_slice(&[0x80 | 0x10, 5]);
    let mut ofs = entry_header(OBJ_OFS_DELTA, d.len() as u64);
    ofs.extend(varint(a.len() as u64)); // one byte: < 128
    ofs.extend(deflate(&d));
    let p = pack(&[a.clone(), ofs, ref_delta(5)]);
    let mut s = PackScanner::new(1 << 20, 1 << 30);
    assert_eq!(s.feed(&p).unwrap(), p.len());
    let second = 12 + a.len() as u64;
    let e = s.into_entries();
    assert_eq!(e[0], (12, 3));
    assert_eq!(e[1], (second, 3));
    assert_eq!(e[2].1, 0);
}

#[test]
fn empty_pack() {
    let p = pack(&[]);
    assert_eq!(p.len(), 32);
    let mut s = PackScanner::new(10, 100);
    assert_eq!(s.feed(&p).unwrap(), 32);
    assert!(s.is_done());
}

#[test]
fn object_over_limit_from_header() {
    let p = pack(&[blob(b"small"), blob(&[b'x'; 2000])]);
    let mut s = PackScanner::new(1000, 1 << 30);
    let n = s.feed(&p).unwrap();
    assert_eq!(
        s.refused(),
        Some(&ScanError::ObjectTooLarge {
            size: 2000,
            limit: 1000
        })
    );
    // Stopped as soon as the entry header was read: the object's data
    // has not been handed on.
    let small_entry = blob(b"small").len();
    assert_eq!(n, 12 + small_entry + entry_header(3, 2000).len());
    // Scanning on finds the end.
    let rest = &p[n..];
    assert_eq!(s.feed(rest).unwrap(), rest.len());
    assert!(s.is_done());
}

#[test]
fn delta_result_over_limit() {
    let p = pack(&[ref_delta(5_000_000)]);
    let (r, _) = scan_bytewise(&p, 1_000_000);
    assert_eq!(
        r.unwrap_err(),
        ScanError::ObjectTooLarge {
            size: 5_000_000,
            limit: 1_000_000
        }
    );
    let p = pack(&[ref_delta(999_999)]);
    assert!(scan_bytewise(&p, 1_000_000).0.is_ok());
}

#[test]
fn pack_over_limit() {
    let p = pack(&[blob(&[b'y'; 5000])]);
    assert!(p.len() > 40);
    let mut s = PackScanner::new(1 << 20, 40);
    assert_eq!(
        s.feed(&p).unwrap_err(),
        ScanError::PackTooLarge { limit: 40 }
    );
}

#[test]
fn corrupt_packs() {
    let mut s = PackScanner::new(100, 1000);
    assert!(matches!(
        s.feed(b"PACX\0\0\0\x02\0\0\0\x01"),
        Err(ScanError::Corrupt(_))
    ));
    let mut s = PackScanner::new(100, 1000);
    assert!(matches!(
        s.feed(b"PACK\0\0\0\x09\0\0\0\x01"),
        Err(ScanError::Corrupt(_))
    ));
    // Type 5 is reserved.
    let mut p = pack(&[]);
    p.truncate(12);
    p[11] = 1;
    p.push(5 << 4);
    let mut s = PackScanner::new(100, 1000);
    assert!(matches!(s.feed(&p), Err(ScanError::Corrupt(_))));
    // Header says 3 bytes, data inflates to 5.
    let mut e = entry_header(3, 3);
    e.extend(deflate(b"hello"));
    let mut s = PackScanner::new(100, 1000);
    assert!(matches!(s.feed(&pack(&[e])), Err(ScanError::Corrupt(_))));
    // A truncated pack is simply not done.
    let p = pack(&[blob(b"hello world")]);
    let mut s = PackScanner::new(100, 1000);
    assert_eq!(s.feed(&p[..p.len() - 25]).unwrap(), p.len() - 25);
    assert!(!s.is_done());
}

#[test]
fn human_sizes() {
    assert_eq!(human(100), "100 bytes");
    assert_eq!(human(100 * 1024 * 1024), "100.0 MiB");
    assert_eq!(human(2 * 1024 * 1024 * 1024), "2.0 GiB");
}

#[test]
fn too_many_objects_are_refused_from_the_header() {
    let mut header = b"PACK\0\0\0\x02".to_vec();
    header.extend_from_slice(&5u32.to_be_bytes());
    let mut s = PackScanner::new(1 << 20, 1 << 30).max_objects(4);
    match s.feed(&header) {
        Err(e @ ScanError::TooManyObjects { count: 5, limit: 4 }) => {
            assert!(e.to_string().contains("over the limit of 4 objects"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let mut s = PackScanner::new(1 << 20, 1 << 30).max_objects(5);
    assert_eq!(s.feed(&header).expect("5 objects are fine"), 12);
}

proptest::proptest! {
    /// Arbitrary bytes after a valid pack header: the scanner errs or
    /// goes on, never panics, and never reports more than it was fed.
    #[test]
    fn prop_scanner_never_panics(
        count in 0u32..8,
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
        cut in 1usize..50,
    ) {
        let mut data = b"PACK\0\0\0\x02".to_vec();
        data.extend_from_slice(&count.to_be_bytes());
        data.extend_from_slice(&body);
        let mut s = PackScanner::new(1 << 20, 1 << 20).max_objects(4);
        for chunk in data.chunks(cut) {
            match s.feed(chunk) {
                Ok(n) => proptest::prop_assert!(n <= chunk.len()),
                Err(_) => break,
            }
        }
    }
}
