//! Dumps of the local provider's resources: export and import through the
//! type's own tools in its container (`pg_dump -Fc` / `pg_restore`,
//! `redis-cli --rdb` / the RDB loaded in place), and backups as files,
//! `DATA_DIR/backups/NAME/ID.dump` (mode 0600) beside `ID.json` (what
//! `resources:backups` lists). Everything streams: no dump is ever held in
//! memory.

use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use super::exec::{self, Exec};
use super::LocalResources;
use crate::resources::{
    BackupInfo, Kind, Reader, Resource, ResourceError, Result, Writer, PG_USER,
};

fn io_err(what: &str, e: std::io::Error) -> ResourceError {
    ResourceError::Failed(format!("{what}: {e}"))
}

/// `b-YYYYMMDDTHHMMSSZ-XXXX`: sorts by time.
fn new_backup_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let stamp = now.format(&fmt).expect("a UTC time always formats");
    format!("b-{stamp}-{:04x}", rand::random::<u16>())
}

fn valid_id(id: &str) -> bool {
    id.starts_with("b-")
        && id.len() <= 40
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn dir_of(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

impl LocalResources {
    /// Runs the type's dump tool in the container with its stdout to `out`.
    pub(super) async fn export_impl(&self, r: &Resource, out: Writer) -> Result<()> {
        let id = self.running(&r.name).await?;
        let pw = r.password.expose();
        let (argv, env) = match r.kind {
            Kind::Postgres => (
                ["pg_dump", "-Fc", "-U", PG_USER, "-d", &r.database()]
                    .map(String::from)
                    .to_vec(),
                vec![format!("PGPASSWORD={pw}")],
            ),
            // redis-cli writes the RDB to a file it names; its messages go
            // to stderr so stdout is the dump alone.
            Kind::Redis => (
                [
                    "sh",
                    "-c",
                    "f=$(mktemp) && redis-cli --rdb \"$f\" >&2 && cat \"$f\"; s=$?; rm -f \"$f\"; exit $s",
                ]
                .map(String::from)
                .to_vec(),
                vec![format!("REDISCLI_AUTH={pw}")],
            ),
        };
        let e = Exec {
            argv,
            env,
            stdin: None,
            stdout: out,
            stderr: None,
            tty: None,
            what: "export",
        };
        let done = exec::exec(self.docker(), &id, e).await?;
        if done.code != 0 {
            return Err(ResourceError::Failed(format!(
                "the dump of {} failed (exit {}): {}",
                r.name, done.code, done.stderr_tail
            )));
        }
        Ok(())
    }

    /// Replaces the resource's data with the dump on `input`.
    pub(super) async fn import_impl(&self, r: &Resource, input: Reader) -> Result<()> {
        let lock = self.lock_of(&r.name);
        let _g = lock.lock().await;
        let id = self.running(&r.name).await?;
        let pw = r.password.expose();
        match r.kind {
            Kind::Postgres => {
                let db = r.database();
                let argv = [
                    "pg_restore",
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "--no-acl",
                    "--single-transaction",
                    "--exit-on-error",
                    "-U",
                    PG_USER,
                    "-d",
                    &db,
                ];
                let env = vec![format!("PGPASSWORD={pw}")];
                self.exec_stdin(&id, &argv, env, input, "pg_restore").await
            }
            Kind::Redis => {
                // The RDB goes beside the live one, replaces it, and the
                // server loads it in place; the AOF is then rewritten from
                // what was loaded, so a restart keeps the imported data.
                let env = vec![format!("REDISCLI_AUTH={pw}")];
                let put = ["sh", "-c", "cat > /data/.rack-import.rdb"];
                self.exec_stdin(&id, &put, Vec::new(), input, "writing the RDB")
                    .await?;
                let swap = ["mv", "-f", "/data/.rack-import.rdb", "/data/dump.rdb"];
                exec::run_checked(self.docker(), &id, &swap, Vec::new(), "replacing dump.rdb")
                    .await?;
                let reload = ["redis-cli", "DEBUG", "RELOAD", "NOSAVE"];
                let out =
                    exec::run_checked(self.docker(), &id, &reload, env.clone(), "loading the RDB")
                        .await?;
                if out != "OK" {
                    return Err(ResourceError::Failed(format!("loading the RDB: {out}")));
                }
                let rewrite = ["redis-cli", "BGREWRITEAOF"];
                exec::run_checked(self.docker(), &id, &rewrite, env, "rewriting the AOF")
                    .await
                    .map(drop)
            }
        }
    }

    async fn exec_stdin(
        &self,
        id: &str,
        argv: &[&str],
        env: Vec<String>,
        input: Reader,
        what: &str,
    ) -> Result<()> {
        let e = Exec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env,
            stdin: Some(input),
            stdout: Box::new(tokio::io::sink()),
            stderr: None,
            tty: None,
            what,
        };
        let done = exec::exec(self.docker(), id, e).await?;
        if done.code != 0 {
            return Err(ResourceError::Failed(format!(
                "{what} failed (exit {}): {}",
                done.code, done.stderr_tail
            )));
        }
        Ok(())
    }

    pub(super) async fn backup_impl(&self, r: &Resource, trigger: &str) -> Result<BackupInfo> {
        let dir = dir_of(&self.backups, &r.name);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_err("creating the backups directory", e))?;
        let id = new_backup_id();
        let partial = dir.join(format!("{id}.dump.partial"));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .await
            .map_err(|e| io_err("creating the backup file", e))?;
        let out = Box::new(tokio::io::BufWriter::with_capacity(256 * 1024, file));
        if let Err(e) = self.export_impl(r, out).await {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        let bytes = tokio::fs::metadata(&partial)
            .await
            .map_err(|e| io_err("reading the backup file", e))?
            .len();
        let info = BackupInfo {
            id: id.clone(),
            created: crate::store::now_rfc3339(),
            bytes,
            kind: r.kind.as_str().to_string(),
            trigger: trigger.to_string(),
        };
        tokio::fs::rename(&partial, dir.join(format!("{id}.dump")))
            .await
            .map_err(|e| io_err("keeping the backup file", e))?;
        let meta = serde_json::to_vec_pretty(&info).expect("a backup record always serializes");
        tokio::fs::write(dir.join(format!("{id}.json")), meta)
            .await
            .map_err(|e| io_err("writing the backup record", e))?;
        Ok(info)
    }

    pub(super) async fn restore_impl(&self, r: &Resource, id: &str) -> Result<()> {
        let info = find_backup(&self.backups, &r.name, id).await?;
        if info.kind != r.kind.as_str() {
            return Err(ResourceError::Refused(format!(
                "backup {id} was taken from a {} resource; {} is {}",
                info.kind, r.name, r.kind
            )));
        }
        let path = dir_of(&self.backups, &r.name).join(format!("{id}.dump"));
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_err("opening the backup", e))?;
        let mut head = [0u8; 5];
        file.read_exact(&mut head)
            .await
            .map_err(|e| io_err("reading the backup", e))?;
        if Kind::of_dump(&head) != Some(r.kind) {
            return Err(ResourceError::Refused(format!(
                "backup {id} is not {}",
                r.kind.dump_name()
            )));
        }
        let input = std::io::Cursor::new(head.to_vec()).chain(file);
        self.import_impl(r, Box::new(input)).await
    }
}

async fn find_backup(root: &Path, name: &str, id: &str) -> Result<BackupInfo> {
    let missing = || {
        ResourceError::NotFound(format!(
            "{name} has no backup '{id}' (see resources:backups {name})"
        ))
    };
    if !valid_id(id) {
        return Err(missing());
    }
    let text = match tokio::fs::read(dir_of(root, name).join(format!("{id}.json"))).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(io_err("reading the backup record", e)),
    };
    serde_json::from_slice(&text)
        .map_err(|e| ResourceError::Failed(format!("backup record {id}: {e}")))
}

/// The backups of `name`, oldest first.
pub(super) async fn list_backups(root: &Path, name: &str) -> Result<Vec<BackupInfo>> {
    let mut dir = match tokio::fs::read_dir(dir_of(root, name)).await {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("reading the backups directory", e)),
    };
    let mut out = Vec::new();
    while let Some(entry) = dir
        .next_entry()
        .await
        .map_err(|e| io_err("reading the backups directory", e))?
    {
        let file = entry.file_name().to_string_lossy().to_string();
        let Some(id) = file.strip_suffix(".json") else {
            continue;
        };
        if let Ok(info) = find_backup(root, name, id).await {
            out.push(info);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Removes all but the newest `keep` backups of `name`.
pub(super) async fn prune_backups(root: &Path, name: &str, keep: usize) -> Result<Vec<String>> {
    let all = list_backups(root, name).await?;
    let extra = all.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for b in all.into_iter().take(extra) {
        let dir = dir_of(root, name);
        // The record first: a crash between leaves a stray dump, never a
        // listed backup without its data.
        let _ = tokio::fs::remove_file(dir.join(format!("{}.json", b.id))).await;
        let _ = tokio::fs::remove_file(dir.join(format!("{}.dump", b.id))).await;
        removed.push(b.id);
    }
    Ok(removed)
}

pub(super) async fn remove_backups(root: &Path, name: &str) -> Result<()> {
    match tokio::fs::remove_dir_all(dir_of(root, name)).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing the backups", e)),
    }
}
