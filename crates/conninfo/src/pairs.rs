//! libpq's connection string syntax: `key = value` pairs separated by white space, where a
//! value is either a run of non-space characters or single-quoted, and a backslash takes
//! the next character as it is in both.
use crate::Error;

/// The pairs of `connection`, in order.
pub fn parse(connection: &str) -> Result<Vec<(String, String)>, Error> {
    let mut chars = connection.chars().peekable();
    let mut pairs = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(Error::Syntax(format!(
                "missing \"=\" after \"{key}\" in connection info string"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        loop {
            match chars.next() {
                None if quoted => {
                    return Err(Error::Syntax(
                        "unterminated quoted string in connection info string".to_owned(),
                    ))
                }
                None => break,
                Some('\'') if quoted => break,
                Some(c) if c.is_whitespace() && !quoted => break,
                Some('\\') => value.extend(chars.next()),
                Some(c) => value.push(c),
            }
        }
        pairs.push((key, value));
    }
}

/// `pairs` as a connection string that [`parse`] (and tokio-postgres) read back as is.
pub fn render(pairs: &[(String, String)]) -> String {
    let quoted = |value: &str| value.replace('\\', "\\\\").replace('\'', "\\'");
    pairs
        .iter()
        .map(|(key, value)| format!("{key}='{}'", quoted(value)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn values_plain_quoted_and_escaped() {
        let parsed =
            parse(r" host = 1.2.3.4  sslrootcert='/a b/it\'s' user=a\ b dbname=''").unwrap();
        assert_eq!(
            parsed,
            owned(&[
                ("host", "1.2.3.4"),
                ("sslrootcert", "/a b/it's"),
                ("user", "a b"),
                ("dbname", ""),
            ])
        );
        assert_eq!(parse(&render(&parsed)).unwrap(), parsed, "round trip");
    }

    #[test]
    fn broken_strings_are_refused() {
        assert!(parse("host").is_err());
        assert!(parse("host 1.2.3.4").is_err());
        assert!(parse("host='1.2.3.4").is_err());
        assert_eq!(parse("  ").unwrap(), Vec::new());
    }
}
