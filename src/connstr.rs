//! Connection strings of group members: validated once when a node is named, then turned
//! into tokio-postgres configurations and TLS connectors (`conninfo` reads the keys that
//! tokio-postgres does not: TLS files, `verify-ca`/`verify-full`, `passfile`).
use std::time::Duration;

use conninfo::{Defaults, Member};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::Host;
use tokio_postgres::Config;

use crate::error::{PaxosError, Result};

fn invalid(connection: &str, reason: impl ToString) -> PaxosError {
    PaxosError::InvalidConnection {
        connection: redact(connection),
        reason: reason.to_string(),
    }
}

/// Checks a member's connection string before it is stored anywhere. Rejected:
/// - anything libpq-style parsing rejects, and `sslmode` values other than `disable`,
///   `prefer`, `require`, `verify-ca` and `verify-full`;
/// - passwords, since member connection strings are copied to every member's catalog
///   (use a password file instead);
/// - TCP host names: resolving a name would start a helper thread inside the backend, so
///   members are named by IP address (or `hostaddr`) or by a Unix-socket directory.
///
/// The files it names are not looked at here: every member reads them on its own host.
pub fn validate(connection: &str) -> Result<()> {
    let invalid = |reason: &str| invalid(connection, reason);
    if connection.trim().is_empty() {
        return Err(invalid("it is empty"));
    }
    if connection.contains("://") {
        return Err(invalid("URIs are not supported, use key=value pairs"));
    }
    let config = Member::parse(connection)
        .map_err(|e| invalid(&e.to_string()))?
        .config;
    if config.get_password().is_some() {
        return Err(invalid("it contains a password (use a password file)"));
    }
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        return Err(invalid("it names no host"));
    }
    if config.get_hostaddrs().is_empty() {
        for host in config.get_hosts() {
            if let Host::Tcp(name) = host {
                if name.parse::<std::net::IpAddr>().is_err() {
                    return Err(invalid(&format!(
                        "host \"{name}\" is not an IP address (use hostaddr= or an IP literal)"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// What it takes to reach a member: libpq's defaults for user, database and files, the
/// password from a password file, a bounded connect, an application_name that shows up in
/// pg_stat_activity, and the TLS connector the string asks for.
pub fn config(connection: &str, timeout: Duration) -> Result<(Config, MakeTlsConnector)> {
    let member = Member::parse(connection).map_err(|e| invalid(connection, e))?;
    let defaults = Defaults {
        os_user: os_user_name(),
        home: os_user_home(),
        passfile_env: std::env::var_os("PGPASSFILE").map(Into::into),
    };
    let (mut config, tls) = member
        .connect_with(&defaults)
        .map_err(|e| invalid(connection, e))?;
    config.connect_timeout(timeout);
    // Names this node in the member's pg_stat_activity (and to test proxies that cut links).
    config.application_name(format!("pg_paxos {}", crate::gucs::node_id()));
    // Acceptors answer only after their commit is durable, whatever the server's default.
    let options = match config.get_options() {
        Some(own) => format!("{own} -c synchronous_commit=on"),
        None => "-c synchronous_commit=on".to_owned(),
    };
    config.options(options);
    Ok((config, tls))
}

/// The role a member connection string logs in as (libpq's default: the OS user).
pub fn user(connection: &str) -> Option<String> {
    let member = Member::parse(connection).ok()?;
    Some(
        member
            .config
            .get_user()
            .map_or_else(os_user_name, str::to_owned),
    )
}

/// The connection string with any password value hidden, for messages.
pub fn redact(connection: &str) -> String {
    connection
        .split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.trim() == "password" => "password=***".to_owned(),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// libpq's default user: the operating-system user running this server.
fn os_user_name() -> String {
    own_passwd_field(|pw| pw.pw_name).unwrap_or_else(|| "postgres".to_owned())
}

/// Where libpq looks for `.pgpass` and `.postgresql/`: the server user's home directory.
fn os_user_home() -> Option<std::path::PathBuf> {
    own_passwd_field(|pw| pw.pw_dir).map(Into::into)
}

fn own_passwd_field(field: impl Fn(&libc::passwd) -> *mut libc::c_char) -> Option<String> {
    // SAFETY: getpwuid returns a pointer to static storage or NULL; the backend is
    // single-threaded, and the field is copied out before any other call.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        let value = pw.as_ref().map(field).filter(|p| !p.is_null())?;
        Some(
            std::ffi::CStr::from_ptr(value)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// A SQL string literal for any text, valid whatever standard_conforming_strings is.
pub fn quote_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("E'");
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn accepts_ip_hosts_and_socket_directories() {
        for ok in [
            "host=127.0.0.1 port=5432",
            "host=::1 dbname=x user=y",
            "hostaddr=10.1.2.3 host=db.example port=5433",
            "host=/var/run/postgresql",
            "host=10.0.0.1 sslmode=verify-full sslrootcert='/etc/pg paxos/ca.crt' \
             sslcert=/etc/c.crt sslkey=/etc/c.key passfile=/etc/pgpass",
        ] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
    }

    #[pg_test]
    fn rejects_names_passwords_and_garbage() {
        for bad in [
            "",
            "   ",
            "host=db.example",
            "host=127.0.0.1 password=secret",
            "host=127.0.0.1 port=notaport",
            "postgresql://127.0.0.1/db",
            "host='unterminated",
            "dbname=x",
            "host=127.0.0.1 sslmode=allow",
            "host=127.0.0.1 sslrootcert",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[pg_test]
    fn literals_round_trip_through_the_server() {
        for text in [
            "plain",
            "it's",
            "back\\slash",
            "'; DROP TABLE x; --",
            "ünï\ncode",
        ] {
            let sql = format!("SELECT {}::text", quote_literal(text));
            assert_eq!(Spi::get_one::<String>(&sql).unwrap().as_deref(), Some(text));
        }
    }

    #[pg_test]
    fn redacts_passwords() {
        assert_eq!(
            redact("host=1.2.3.4 password=secret user=u"),
            "host=1.2.3.4 password=*** user=u"
        );
    }
}
