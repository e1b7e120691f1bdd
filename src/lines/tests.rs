use super::*;

fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = LineBuf::default();
    for c in chunks {
        b.push(c, &mut |l| out.push(l.to_vec()));
    }
    b.finish(&mut |l| out.push(l.to_vec()));
    out
}

#[test]
fn lines_across_chunks() {
    assert_eq!(
        split(&[b"ab", b"c\nd", b"\n\nef"]),
        vec![b"abc".to_vec(), b"d".to_vec(), b"".to_vec(), b"ef".to_vec()]
    );
}

#[test]
fn long_lines_are_cut_at_the_bound() {
    let big = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
    let mut with_nl = big.clone();
    with_nl.push(b'\n');
    // Whole, or fed a byte at a time: the same lines.
    let whole = split(&[&with_nl, b"y\n"]);
    let bytewise: Vec<&[u8]> = with_nl.chunks(1).collect();
    let mut bytewise = bytewise.clone();
    bytewise.push(b"y\n");
    assert_eq!(split(&bytewise), whole);
    let lens: Vec<usize> = whole.iter().map(Vec::len).collect();
    assert_eq!(lens, vec![MAX_LINE_BYTES, MAX_LINE_BYTES, 10, 1]);
    // A newline right at the cut ends that line: no empty line.
    let mut exact = vec![b'x'; MAX_LINE_BYTES];
    exact.push(b'\n');
    assert_eq!(split(&[&exact, b"z"]).len(), 2);
}

#[tokio::test]
async fn reads_a_stream_in_bounded_lines() {
    let data = [vec![b'a'; 3 * MAX_LINE_BYTES], b"\nend".to_vec()].concat();
    let mut got = Vec::new();
    for_each_line(&data[..], |l| got.push(l.len())).await;
    assert_eq!(
        got,
        vec![MAX_LINE_BYTES; 3]
            .into_iter()
            .chain([3])
            .collect::<Vec<_>>()
    );
}
