//! The password of a connection, as libpq finds it: `PGPASSWORD`, else the password file.

/// What a password is looked up by, as libpq does: the URL's host, port, database and user.
pub(super) struct PassKey {
    pub host: String,
    pub port: String,
    pub database: String,
    pub user: String,
}

/// The password for `key`: `PGPASSWORD`, else the first matching line of the password file
/// (`PGPASSFILE`, default `~/.pgpass`), which libpq's rules make unreadable to others.
pub(super) fn password(key: &PassKey) -> Option<String> {
    if let Ok(password) = std::env::var("PGPASSWORD") {
        return Some(password);
    }
    let path = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::home_dir().map(|h| h.join(".pgpass")))?;
    let text = std::fs::read_to_string(&path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "password file {} is readable by others (mode {:o}): ignored, as libpq does",
                path.display(),
                mode & 0o777
            );
            return None;
        }
    }
    pgpass_lookup(&text, key)
}

/// The password of the first line of a pgpass file (`host:port:database:user:password`, `*`
/// matching anything, `\:` and `\\` escaped) that matches `key`.
fn pgpass_lookup(text: &str, key: &PassKey) -> Option<String> {
    let wanted = [&key.host, &key.port, &key.database, &key.user];
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let fields = pgpass_fields(line);
            let [host, port, database, user, password] = fields.as_slice() else {
                return None;
            };
            [host, port, database, user]
                .iter()
                .zip(wanted)
                .all(|(field, want)| *field == "*" || *field == want)
                .then(|| password.clone())
        })
}

/// A pgpass line split at its unescaped colons, escapes removed.
fn pgpass_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field) = (Vec::new(), String::new());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => field.extend(chars.next()),
            ':' => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str, user: &str) -> PassKey {
        PassKey {
            host: host.into(),
            port: "5432".into(),
            database: "james".into(),
            user: user.into(),
        }
    }

    #[test]
    fn the_first_matching_pgpass_line_gives_the_password() {
        let text = "# comment\n\
                    db:5432:james:other:no\n\
                    db:*:james:gc:se\\:cret\\\\\n\
                    *:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(text, &key("db", "gc")).as_deref(),
            Some("se:cret\\")
        );
        assert_eq!(
            pgpass_lookup(text, &key("db", "x")).as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup("db:5432:james:gc\n", &key("db", "gc")), None);
    }
}
