//! Command line: `serve`, `render` (offline, like `helm template`) and `validate` (lint).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::args::{LogFormat, Output, RenderArgs, ServeArgs, ValidateArgs};
use crate::catalog::{self, Catalog, UserIndex};
use crate::plan::{self, SpawnRequest};
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
    crate::serve::init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => crate::serve::run(args),
        Command::Render(args) => render(args),
        Command::Validate(args) => validate(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn render(args: RenderArgs) -> Result<ExitCode, String> {
    let (catalog, users) = args.folders.load(&args.selector.selector()?)?;
    for problem in catalog.problems() {
        eprintln!("warning: {problem}");
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
    let cms = catalog::load_paths(&paths).map_err(|e| e.to_string())?;
    let selector = args.selector.selector()?;
    let (users, rest) = UserIndex::split(&selector, &cms);
    let catalog = Catalog::build(&selector, rest, None);
    let mut problems: Vec<String> = catalog.problems().iter().map(ToString::to_string).collect();
    problems.extend(users.problems());
    let lint = plan::lint(&catalog);
    problems.extend(lint.problems);
    for warning in &lint.warnings {
        println!("warning: {warning}");
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
