//! Secrets at rest: nothing readable under the data dir, tampering detected.

use std::path::Path;

use crate::harness::Rack;

fn all_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else if p.is_file() {
            // (not the server's control socket: it holds no bytes)
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

#[test]
fn config_values_are_encrypted_and_bound() {
    let rack = Rack::start();
    let a = &rack.admin;
    rack.ssh(a, "apps:create one").ok();
    rack.ssh(a, "apps:create two").ok();
    let secret: String = (0..32)
        .map(|i| (b'a' + ((std::process::id() as usize * 7 + i * 13) % 26) as u8) as char)
        .collect();
    rack.ssh(a, &format!("config:set one SECRET={secret} OTHER=x"))
        .ok();
    rack.ssh(a, "config:set two SECRET=y").ok();
    assert_eq!(
        rack.ssh(a, "config:get one SECRET").ok().stdout,
        format!("{secret}\n")
    );

    // Nothing under the data dir holds the value, its base64 or hex form.
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let forms = [
        secret.clone(),
        b64(secret.as_bytes()),
        b64(&secret.as_bytes()[1..]),
        b64(&secret.as_bytes()[2..]),
        hex.clone(),
        hex.to_uppercase(),
    ];
    let mut files = Vec::new();
    all_files(&rack.data_dir(), &mut files);
    assert!(files.iter().any(|f| f.ends_with("state.db")));
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for form in &forms {
            assert!(
                !contains(&bytes, &form.as_bytes()[..24]),
                "{} holds the secret as {form}",
                f.display()
            );
        }
    }
    assert!(
        !rack.logs().contains(&secret),
        "the secret reached the server log"
    );

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(rack.data_dir().join("master.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let db = rusqlite::Connection::open(rack.data_dir().join("state.db")).unwrap();
    // A ciphertext copied onto another app's key fails to decrypt there.
    db.execute(
        "UPDATE config_values SET nonce = (SELECT nonce FROM config_values WHERE app='one' AND key='SECRET'),
                ciphertext = (SELECT ciphertext FROM config_values WHERE app='one' AND key='SECRET')
         WHERE app = 'two' AND key = 'SECRET'",
        [],
    )
    .unwrap();
    rack.ssh(a, "config:get two SECRET")
        .err("cannot decrypt config value SECRET of app two");
    // ... and onto another key of the same app.
    db.execute(
        "UPDATE config_values SET nonce = (SELECT nonce FROM config_values WHERE app='one' AND key='SECRET'),
                ciphertext = (SELECT ciphertext FROM config_values WHERE app='one' AND key='SECRET')
         WHERE app = 'one' AND key = 'OTHER'",
        [],
    )
    .unwrap();
    rack.ssh(a, "config:get one OTHER").err("cannot decrypt");
    // One flipped bit is detected.
    let ct: Vec<u8> = db
        .query_row(
            "SELECT ciphertext FROM config_values WHERE app='one' AND key='SECRET'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut flipped = ct.clone();
    flipped[3] ^= 0x01;
    db.execute(
        "UPDATE config_values SET ciphertext = ?1 WHERE app='one' AND key='SECRET'",
        [&flipped],
    )
    .unwrap();
    let out = rack.ssh(a, "config:get one SECRET");
    out.err("cannot decrypt config value SECRET of app one");
    assert!(!out.stderr.contains(&secret));
}
