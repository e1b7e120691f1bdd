//! `rack completions bash|zsh`: completion scripts for the local and the
//! server commands; `-a` completes the rack's app names, which the script
//! asks for with `rack completions apps` (the checkout's rack, over ssh).

use super::remote::locate;
use super::ssh::Ssh;
use super::{CompletionsArgs, Target};

/// Prints the script (or, for `apps`, the rack's app names, one a line).
/// `local` are the binary's own subcommands.
pub fn completions(args: &CompletionsArgs, local: &[String]) -> anyhow::Result<()> {
    let mut commands: Vec<String> = local.to_vec();
    commands.extend(crate::cmd::HELP.iter().map(|h| h.0.to_string()));
    commands.dedup();
    match args.shell.as_str() {
        "bash" => print!("{}", BASH.replace("@COMMANDS@", &commands.join(" "))),
        "zsh" => print!("{}", ZSH.replace("@COMMANDS@", &commands.join(" "))),
        _ => {
            for app in app_names() {
                println!("{app}");
            }
        }
    }
    Ok(())
}

/// The app names the rack shows this user; none when it cannot be asked.
pub fn app_names() -> Vec<String> {
    let Ok(url) = locate(&Target::default(), false) else {
        return Vec::new();
    };
    let Some(text) = Ssh::discover().quiet_output(&url, "apps --json") else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Array(apps)) = serde_json::from_str(&text) else {
        return Vec::new();
    };
    apps.iter()
        .filter_map(|a| a.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .collect()
}

const BASH: &str = r#"# rack completion for bash: source <(rack completions bash)
_rack() {
    local line="${COMP_LINE:0:COMP_POINT}"
    local cur="${line##*[[:space:]]}"
    local words=($line)
    local prev="${words[${#words[@]}-1]}"
    [[ -n $cur ]] && prev="${words[${#words[@]}-2]}"
    local candidates
    case "$prev" in
        -a|--app) candidates="$(rack completions apps 2>/dev/null)" ;;
        -r|--remote) candidates="$(git remote 2>/dev/null)" ;;
        *)
            if ((${#words[@]} == 1 || (${#words[@]} == 2 && ${#cur} > 0))); then
                candidates="@COMMANDS@"
            else
                candidates="-a --app -r --remote"
            fi
            ;;
    esac
    # Bash splits words at ':' (COMP_WORDBREAKS): complete the whole word,
    # then hand back only the part after the last ':' typed.
    local colon="${cur%"${cur##*:}"}"
    COMPREPLY=($(compgen -W "$candidates" -- "$cur"))
    COMPREPLY=("${COMPREPLY[@]#"$colon"}")
}
complete -F _rack rack
"#;

const ZSH: &str = r#"#compdef rack
# rack completion for zsh: source <(rack completions zsh) (after compinit)
_rack() {
    local -a commands apps
    commands=(@COMMANDS@)
    case "${words[CURRENT-1]}" in
        -a|--app)
            apps=(${(f)"$(rack completions apps 2>/dev/null)"})
            compadd -a apps
            return
            ;;
        -r|--remote)
            compadd -- ${(f)"$(git remote 2>/dev/null)"}
            return
            ;;
    esac
    if (( CURRENT == 2 )); then
        compadd -a commands
    else
        compadd -- -a --app -r --remote
    fi
}
if [[ "${funcstack[1]}" == _rack ]]; then
    _rack "$@"
else
    compdef _rack rack
fi
"#;
