//! `overlayd-cni`: CNI 1.0 plugin. A runtime runs it with `CNI_COMMAND` etc. in the environment and the
//! network configuration on stdin; it asks overlayd (admin socket) to attach/detach the namespace and prints
//! the CNI result, or a CNI error object and exit status 1. See `overlayd::cni`.

use overlayd::admin::Method;
use overlayd::cni::{self, CniError, Code, Command};
use overlayd::ctl::{self, Target};
use std::io::{Read, Write};
use std::path::PathBuf;

fn main() {
    let mut input = Vec::new();
    let (out, ok) = match run(&mut input) {
        Ok(out) => (out, true),
        Err(e) => {
            let version = cni::config_version(&input)
                .filter(|v| cni::SUPPORTED_VERSIONS.contains(&v.as_str()))
                .unwrap_or_else(|| cni::SUPPORTED_VERSIONS[0].to_string());
            (e.to_json(&version), false)
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.write_all(b"\n");
    let _ = stdout.flush();
    if !ok {
        std::process::exit(1);
    }
}

fn run(input: &mut Vec<u8>) -> Result<String, CniError> {
    // Read the configuration first, so that even an environment error is answered in its cniVersion.
    let read = read_stdin(input);
    let env = cni::parse_env(|k| std::env::var(k).ok())?;
    if env.command == Command::Version {
        // VERSION may come with a config ({"cniVersion": ...}) or none at all.
        let v = cni::config_version(input).unwrap_or_else(|| cni::SUPPORTED_VERSIONS[0].to_string());
        return Ok(cni::version_json(&v));
    }
    read?;
    let conf = cni::parse_config(input)?;
    let target = Target::Socket(PathBuf::from(&conf.socket));
    match env.command {
        Command::Add => {
            if !std::path::Path::new(&env.netns).exists() {
                return Err(CniError::new(
                    Code::UnknownContainer,
                    "network namespace not found",
                    format!("{} does not exist", env.netns),
                ));
            }
            let body = ctl::request(
                &target,
                Method::Post,
                "/v1/attach",
                &cni::attach_body(&conf, &env),
            )
            .map_err(|e| cni::admin_error(&e))?;
            let a = cni::parse_attachment(&body)?;
            Ok(cni::result_json(&conf.cni_version, &env.netns, &a))
        }
        Command::Del => {
            match ctl::request(
                &target,
                Method::Post,
                "/v1/detach",
                &cni::detach_body(&conf, &env),
            ) {
                Ok(_) => Ok(String::new()),
                Err(e) => {
                    let exists = !env.netns.is_empty() && std::path::Path::new(&env.netns).exists();
                    if cni::del_is_done(&e, exists) {
                        Ok(String::new())
                    } else {
                        Err(cni::admin_error(&e))
                    }
                }
            }
        }
        Command::Check => {
            let body = ctl::get(&target, "/v1/attachments").map_err(|e| cni::admin_error(&e))?;
            cni::check(&conf, &env, &body)?;
            Ok(String::new())
        }
        Command::Version => Ok(cni::version_json(&conf.cni_version)),
    }
}

fn read_stdin(buf: &mut Vec<u8>) -> Result<(), CniError> {
    std::io::stdin()
        .lock()
        .take(cni::MAX_CONFIG as u64 + 1)
        .read_to_end(buf)
        .map_err(|e| {
            CniError::new(
                Code::Io,
                "cannot read the network configuration from stdin",
                e.to_string(),
            )
        })?;
    Ok(())
}
