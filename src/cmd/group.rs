//! `commands!`: a group of commands declared one row per command.
//!
//! A row says everything about one command: its words, its variant and
//! fields, how its arguments parse, who may run it, the app it concerns,
//! its audit line and the call of its handler. From the rows the macro
//! writes the group's enum and its `parse`, `access`, `app`, `audit_line`
//! and `execute`, so the access match is exhaustive by construction (a row
//! without `access` does not compile) and a new command is one row plus its
//! handler.
//!
//! ```text
//! "ps:restart" => Restart { app: String, kind: Option<String> }
//!     parse Args::app_maybe_word; access Access::Admin; app app;
//!     audit format!("ps:restart {app}{}", with_space(kind.as_deref()));
//!     run restart(ctx, &app, kind.as_deref());
//! ```
//!
//! `parse` is a function (or closure) `(&mut Args, &str) -> Result<(fields
//! in order,), CmdError>`, given the row's first word for usage messages.
//! `access`, `app` and `audit` see the fields by reference; `app` and
//! `audit` are optional (none: the command names no app, or is read-only
//! and not audited). `run` sees them by value and the context by the name
//! given after the group's name.

macro_rules! commands {
    (
        $(#[$doc:meta])*
        $group:ident($ctx:ident) {
            $(
                $word:literal $(| $alias:literal)* => $variant:ident { $($field:ident: $ty:ty),* $(,)? }
                    parse $parse:expr;
                    access $access:expr;
                    $(app $app:expr;)?
                    $(audit $audit:expr;)?
                    run $run:expr;
            )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $group {
            $($variant { $($field: $ty),* },)*
        }

        #[allow(unused_variables, clippy::redundant_closure_call)]
        impl $group {
            /// `None` when `name` is not a command of this group.
            pub(super) fn parse(
                name: &str,
                a: &mut super::Args,
            ) -> Result<Option<$group>, super::CmdError> {
                Ok(Some(match name {
                    $($word $(| $alias)* => {
                        let ($($field,)*) = ($parse)(a, $word)?;
                        $group::$variant { $($field),* }
                    })*
                    _ => return Ok(None),
                }))
            }

            /// Who may run the command: one arm per row.
            pub(super) fn access(&self) -> super::Access {
                match self {
                    $($group::$variant { $($field),* } => $access,)*
                }
            }

            /// The app the command concerns, for the audit trail.
            pub(super) fn app(&self) -> Option<&str> {
                match self {
                    $($group::$variant { $($field),* } => {
                        None $(.or(super::group::AppOf::app_of($app)))?
                    })*
                }
            }

            /// The audit line (never a config value), `None` for reads.
            pub(super) fn audit_line(&self) -> Option<String> {
                match self {
                    $($group::$variant { $($field),* } => None $(.or(Some($audit)))?,)*
                }
            }

            pub(super) async fn execute<R: tokio::io::AsyncRead + Unpin>(
                self,
                $ctx: &mut super::Ctx<'_, R>,
            ) -> Result<super::output::Output, super::CmdError> {
                match self {
                    $($group::$variant { $($field),* } => $run.await,)*
                }
            }
        }
    };
}

use super::{Access, Args, CmdError};

/// Access for reading the app `app`: admins and its deploy keys.
pub(super) fn read(app: &str) -> Access {
    Access::Read(app.to_string())
}

/// A field that names the command's app: always (`String`) or maybe
/// (`Option<String>`, `events [APP]`).
pub(super) trait AppOf {
    fn app_of(&self) -> Option<&str>;
}

impl AppOf for String {
    fn app_of(&self) -> Option<&str> {
        Some(self)
    }
}

impl AppOf for Option<String> {
    fn app_of(&self) -> Option<&str> {
        self.as_deref()
    }
}

impl Args {
    /// `CMD` and nothing else.
    pub(super) fn nothing(&mut self, cmd: &str) -> Result<(), CmdError> {
        self.done(cmd)
    }
    /// `CMD APP` and nothing else, as a row's fields.
    pub(super) fn just_app(&mut self, cmd: &str) -> Result<(String,), CmdError> {
        self.only_app(cmd).map(|app| (app,))
    }
}
