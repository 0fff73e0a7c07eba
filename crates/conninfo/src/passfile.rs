//! Passwords from a password file in libpq's format: one
//! `hostname:port:database:username:password` line per entry, `*` matching anything in
//! the first four fields, `\` escaping `:` and `\`, `#` starting a comment line. The first
//! line that matches wins.
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::Error;

/// What a line must match.
pub struct Key<'a> {
    pub host: &'a str,
    pub port: u16,
    pub dbname: &'a str,
    pub user: &'a str,
}

/// The password for `key` in `file`, if the file exists and a line matches.
///
/// As libpq does, a file that anyone but its owner may read or write is not used. When
/// the connection string named the file (`named`), that is an error; the default files
/// are then passed over, as libpq passes them over (with a warning).
pub fn lookup(file: &Path, key: &Key, named: bool) -> Result<Option<String>, Error> {
    let unusable = |reason: String| {
        if named {
            Err(Error::File(format!(
                "password file \"{}\" {reason}",
                file.display()
            )))
        } else {
            Ok(None)
        }
    };
    let meta = match fs::metadata(file) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return Ok(None),
        Err(e) => return unusable(format!("cannot be read: {e}")),
    };
    if !meta.is_file() {
        return unusable("is not a plain file".to_owned());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return unusable(
            "has group or world access; permissions should be u=rw (0600) or less".to_owned(),
        );
    }
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => return unusable(format!("cannot be read: {e}")),
    };
    let port = key.port.to_string();
    let wanted = [key.host, port.as_str(), key.dbname, key.user];
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(fields)
        .find(|fields| {
            fields.len() == 5
                && (fields.iter().zip(wanted)).all(|(field, value)| field == "*" || field == value)
        })
        .map(|mut fields| fields.swap_remove(4)))
}

/// The fields of one line, unescaped; the last one takes the rest of the line.
fn fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => field.extend(chars.next()),
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn write_private(file: &Path, text: &str) {
        fs::write(file, text).unwrap();
        fs::set_permissions(file, fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn key<'a>(host: &'a str, user: &'a str) -> Key<'a> {
        Key {
            host,
            port: 5432,
            dbname: "postgres",
            user,
        }
    }

    #[test]
    fn the_first_matching_line_wins_with_wildcards_and_escapes() {
        let dir = std::env::temp_dir().join(format!("conninfo-lookup-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        write_private(
            &file,
            "# comment\n\
             10.0.0.1:5432:postgres:member:first\n\
             10.0.0.1:*:*:member:second\n\
             *:5432:postgres:we\\:ird:c\\:o\\\\lon:s\n\
             *:*:*:*:fallback\n",
        );
        let find = |k: &Key| lookup(&file, k, true).unwrap();
        assert_eq!(find(&key("10.0.0.1", "member")).as_deref(), Some("first"));
        assert_eq!(
            find(&key("10.0.0.2", "we:ird")).as_deref(),
            Some("c:o\\lon:s")
        );
        assert_eq!(
            find(&key("10.0.0.2", "member")).as_deref(),
            Some("fallback")
        );
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            lookup(&file, &key("10.0.0.1", "member"), true),
            Err(Error::File(m)) if m.contains("group or world access")
        ));
        assert_eq!(
            lookup(&file, &key("10.0.0.1", "member"), false),
            Ok(None),
            "a default file others can read is passed over"
        );
        let missing = dir.join("none");
        assert_eq!(lookup(&missing, &key("h", "u"), false), Ok(None));
        assert!(lookup(&missing, &key("h", "u"), true).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
