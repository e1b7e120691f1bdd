//! `events`: the audit trail, filtered to what the caller may see.

use serde_json::json;

use super::{output::Output, CmdError, Ctx};
use super::{parse_count, usage, Access, Args};
use crate::names::{printable, validate_app};

pub async fn list<R>(
    ctx: &Ctx<'_, R>,
    app: Option<&str>,
    limit: usize,
) -> Result<Output, CmdError> {
    let events = ctx
        .store()
        .events(app, ctx.who.visible_apps(), limit)
        .await?;
    let items = events
        .into_iter()
        .map(|e| {
            json!({
                "id": e.id,
                "time": e.time,
                "actor": e.actor,
                "app": e.app,
                "action": e.action,
                "outcome": e.outcome,
            })
        })
        .collect();
    Ok(Output::list(
        &[
            ("TIME", "time"),
            ("WHO", "actor"),
            ("APP", "app"),
            ("ACTION", "action"),
            ("OUTCOME", "outcome"),
        ],
        items,
    ))
}

// ---------------------------------------------------------------- commands

/// `events [APP] [-n N]`: anyone may list, filtered to what they may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsCmd {
    pub app: Option<String>,
    pub limit: usize,
}

impl EventsCmd {
    /// `None` when `name` is not `events`.
    pub(super) fn parse(name: &str, a: &mut Args) -> Result<Option<EventsCmd>, CmdError> {
        if name != "events" {
            return Ok(None);
        }
        let mut app = None;
        let mut limit = 50;
        let rest = a.rest();
        let mut it = rest.into_iter();
        while let Some(w) = it.next() {
            if w == "-n" {
                let n = it.next().ok_or_else(|| usage("-n needs a number"))?;
                limit = parse_count(&n)?;
            } else if let Some(n) = w.strip_prefix("-n") {
                limit = parse_count(n)?;
            } else if app.is_none() {
                validate_app(&w).map_err(CmdError::Usage)?;
                app = Some(w);
            } else {
                return Err(usage(format!("unexpected argument '{}'", printable(&w))));
            }
        }
        Ok(Some(EventsCmd { app, limit }))
    }

    /// Exhaustive: a new command must say who may run it.
    pub(super) fn access(&self) -> Access {
        match &self.app {
            None => Access::Anyone,
            Some(app) => Access::Read(app.clone()),
        }
    }

    pub(super) async fn execute<R>(self, ctx: &mut Ctx<'_, R>) -> Result<Output, CmdError> {
        list(ctx, self.app.as_deref(), self.limit).await
    }
}
