//! Command line: `serve`, `render` (offline, like `helm template`) and `validate` (lint).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::args::{LogFormat, Output, RenderArgs, ServeArgs, ValidateArgs};
use crate::catalog::{self, Catalog, UserIndex};
use crate::plan::{self, SpawnRequest};
use crate::profile;
use crate::spawn;

#[derive(Debug, Parser)]
#[command(
    name = "singleuser-profiles",
    version,
    about = "Gives every JupyterHub notebook its own Ray cluster"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, env = "SUP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the REST API (watching ConfigMaps in a cluster, or a dry run from the folders).
    Serve(ServeArgs),
    /// Render the objects and environment for one user, offline; writes nothing anywhere.
    Render(RenderArgs),
    /// Lint ConfigMap files; exits 1 with precise messages on any problem.
    Validate(ValidateArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = crate::logging::init(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => crate::serve::run(args),
        Command::Render(args) => render(args),
        Command::Validate(args) => validate(args),
    };
    // The log's last lines come before the final error.
    drop(log);
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn render(args: RenderArgs) -> Result<ExitCode, String> {
    let (catalog, users) = args.folders.load(&args.selector.selector()?, &args.rules.rules()?)?;
    for problem in catalog.problems() {
        eprintln!("warning: {problem}");
    }
    if let Some(reason) = catalog.unusable() {
        return Err(format!("{reason}; nothing to render"));
    }
    let request = SpawnRequest {
        user: args.user,
        groups: args.groups,
        image: args.image,
        profile: args.profile,
        size: args.size,
        options: args.options.into_iter().collect::<BTreeMap<_, _>>(),
        server: args.server,
        namespace: Some(args.namespace.clone()),
    };
    let settings = users.get(&request.user);
    let answer = spawn::render(&catalog, settings, &request, &args.namespace).map_err(|e| e.to_string())?;
    let text = match args.output {
        Output::Json => serde_json::to_string_pretty(&answer).map_err(|e| e.to_string())?,
        Output::Yaml => {
            let mut out = String::new();
            for object in &answer.objects {
                out.push_str("---\n");
                out.push_str(&crate::yaml::to_string(object).map_err(|e| e.to_string())?);
            }
            out.push_str("# environment:\n");
            for (name, value) in &answer.environment {
                let shown = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
                out.push_str(&format!("#   {name}={shown}\n"));
            }
            out
        }
    };
    print_out(&text)
}

/// Prints to stdout; a closed pipe (`render | head`) is a normal end, not a crash.
fn print_out(text: &str) -> Result<ExitCode, String> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("writing the output: {err}")),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn validate(args: ValidateArgs) -> Result<ExitCode, String> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("profiles"), PathBuf::from("templates")]
    } else {
        args.paths
    };
    let rules = args.rules.rules()?;
    let selector = args.selector.selector()?;
    let files = catalog::load_files(&paths, rules.caps.file_bytes()).map_err(|e| e.to_string())?;
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    if files.iter().all(|(_, cms)| cms.is_empty()) {
        return Err(format!(
            "no ConfigMap found in {}: validate reads the *.yaml and *.yml files there",
            shown.join(", ")
        ));
    }
    // Which file each ConfigMap came from; the cluster keeps one object per name, so a second
    // definition is an error rather than a silent override.
    let mut problems: Vec<String> = Vec::new();
    let mut file_of: BTreeMap<&str, &str> = BTreeMap::new();
    for (file, cms) in &files {
        for cm in cms {
            if let Some(first) = file_of.insert(&cm.name, file) {
                problems.push(format!(
                    "ConfigMap {} is defined twice, in {first} and in {file}; the cluster would keep only one: rename or remove one",
                    cm.name
                ));
            }
        }
    }
    let in_file = |configmap: &str| file_of.get(configmap).map_or_else(String::new, |f| format!("{f}: "));
    let cms: Vec<_> = files.iter().flat_map(|(_, cms)| cms).cloned().collect();
    let (users, rest) = UserIndex::split(&selector, &cms);
    let catalog = Catalog::build_with(&selector, &rules, rest, None);
    problems.extend(catalog.problems().iter().map(|p| format!("{}{p}", in_file(&p.configmap))));
    problems.extend(users.problems());
    problems.extend(catalog.unusable().map(str::to_owned));
    let lint = plan::lint(&catalog);
    problems.extend(lint.problems);
    for warning in &lint.warnings {
        println!("warning: {warning}");
    }
    for cm in cms.iter().filter(|cm| selector.matches(cm)) {
        for warning in
            cm.data.get(crate::profile::PROFILES_KEY).map(|t| profile::unknown_keys(t)).unwrap_or_default()
        {
            println!(
                "warning: {}ConfigMap {} key {}: {warning}",
                in_file(&cm.name),
                cm.name,
                crate::profile::PROFILES_KEY
            );
        }
    }
    if problems.is_empty() {
        let warned = match lint.warnings.len() {
            0 => String::new(),
            n => format!(", {n} warning(s)"),
        };
        println!(
            "ok: {} profile ConfigMap(s), {} template(s), every profile renders{warned}",
            catalog.profile_sources().count(),
            catalog.template_count()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &problems {
        println!("error: {problem}");
    }
    println!("{} problem(s) found", problems.len());
    Ok(ExitCode::from(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
