//! Wires an exec of `git-receive-pack`/`git-upload-pack` to `git/` after
//! the access check, with the deploy pipeline as the push hook, and writes
//! the push's audit event.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::cmd::{Access, Identity};
use crate::git::{self, GitService, ReceiveLimits, ReceiveRequest};
use crate::state::Rack;

/// Serves one git request and returns the SSH exit status.
pub async fn run<R, W, E>(
    rack: &Arc<Rack>,
    who: &Identity,
    service: GitService,
    git_protocol: Option<&str>,
    stdin: R,
    stdout: &mut W,
    stderr: &mut E,
) -> u32
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    E: AsyncWrite + Unpin + Send,
{
    let app = service.app().to_string();
    let access = match &service {
        GitService::ReceivePack { .. } => Access::Deploy(app.clone()),
        GitService::UploadPack { .. } => Access::Read(app.clone()),
    };
    // Refuse before saying whether the app exists.
    if !who.may(&access) {
        return refuse(stdout, "permission denied").await;
    }
    let record = match rack.provider.store.get_app(&app).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            let msg = format!(
                "app '{app}' does not exist; create it with: {} apps:create {app}",
                rack.ssh_hint()
            );
            return refuse(stdout, &msg).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "reading app");
            return refuse(stdout, "internal error").await;
        }
    };
    let repo = rack.repo_path(&app);
    match service {
        GitService::UploadPack { .. } => {
            match git::upload_pack(&repo, git_protocol, stdin, stdout).await {
                Ok(code) => code as u32,
                Err(e) => {
                    tracing::warn!(app, error = %e, "upload-pack");
                    let _ = stderr.write_all(format!("error: {e}\n").as_bytes()).await;
                    1
                }
            }
        }
        GitService::ReceivePack { .. } => {
            let limits = &rack.settings.limits;
            let req = ReceiveRequest {
                app: app.clone(),
                repo: repo.clone(),
                deploy_branch: crate::appsettings::deploy_branch(&record.settings)
                    .map(str::to_string),
                limits: ReceiveLimits {
                    max_pack_bytes: limits.max_pack_bytes,
                    max_object_bytes: limits.max_object_bytes,
                    max_pack_objects: limits.max_pack_objects,
                    max_ref_bytes: limits.max_ref_bytes,
                    max_commands_bytes: limits.max_push_commands_bytes,
                    max_repo_bytes: limits.max_repo_bytes,
                    ..ReceiveLimits::default()
                },
            };
            let hook = rack.deployer.push_hook(&who.key_name);
            let result = git::receive_pack(req, stdin, stdout, &hook).await;
            match result {
                Ok(outcome) => {
                    if let Some(branch) = &outcome.new_deploy_branch {
                        if let Ok(mut rec) = rack.provider.store.app(&app).await {
                            rec.settings
                                .entry("deploy_branch".into())
                                .or_insert_with(|| branch.clone());
                            if let Err(e) = rack
                                .provider
                                .store
                                .set_app_settings(&app, &rec.settings)
                                .await
                            {
                                tracing::error!(app, error = %e, "recording the deploy branch");
                            }
                        }
                    }
                    if !outcome.refs.is_empty() {
                        audit_push(rack, who, &app, &outcome).await;
                    }
                    0
                }
                Err(e) => {
                    tracing::warn!(app, error = %e, "receive-pack");
                    // A push refused for what it sent: say why (git shows
                    // the SSH stderr as is).
                    if let git::GitError::Protocol(why) = &e {
                        // Built by the parser, which escaped what it quotes.
                        let line = format!("error: {why}\n");
                        let _ = stderr.write_all(line.as_bytes()).await;
                    }
                    let _ = rack
                        .provider
                        .store
                        .add_event(
                            &who.key_name,
                            Some(&app),
                            "git push",
                            &format!("error: {e}"),
                        )
                        .await;
                    1
                }
            }
        }
    }
}

async fn audit_push(rack: &Rack, who: &Identity, app: &str, outcome: &git::ReceiveOutcome) {
    let refs: Vec<String> = outcome
        .refs
        .iter()
        .map(|r| format!("{} {}..{}", r.refname, short(&r.old), short(&r.new)))
        .collect();
    let mut action = format!("git push {}", refs.join(" "));
    if !outcome.push_options.is_empty() {
        action.push_str(&format!(" -o {}", outcome.push_options.join(" -o ")));
    }
    let failures: Vec<String> = outcome
        .refs
        .iter()
        .filter_map(|r| {
            r.result
                .as_ref()
                .err()
                .map(|e| format!("{} {e}", r.refname))
        })
        .collect();
    let result = if failures.is_empty() {
        "ok".to_string()
    } else {
        format!("error: {}", failures.join("; "))
    };
    let (action, result) = (
        truncate(action, MAX_AUDIT_BYTES),
        truncate(result, MAX_AUDIT_BYTES),
    );
    if let Err(e) = rack
        .provider
        .store
        .add_event(&who.key_name, Some(app), &action, &result)
        .await
    {
        tracing::error!(error = %e, "writing audit event");
    }
}

/// An audit line's action and result are cut at this size: a push may
/// name thousands of refs and push options.
const MAX_AUDIT_BYTES: usize = 4096;

/// `s` cut at `max` bytes (on a character boundary), saying how much went.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = s.len() - cut;
    s.truncate(cut);
    s.push_str(&format!(" ... ({dropped} more bytes)"));
    s
}

fn short(oid: &git2::Oid) -> String {
    oid.to_string()[..7].to_string()
}

/// Tells a git client why it cannot proceed (`fatal: remote error: ...`).
async fn refuse<W: AsyncWrite + Unpin>(stdout: &mut W, msg: &str) -> u32 {
    let _ = stdout.write_all(&git::err_response(msg)).await;
    let _ = stdout.flush().await;
    1
}
