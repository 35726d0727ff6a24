//! Input parsed into types that cannot hold invalid values: usernames, emails, passwords.

use mercato_kit::FieldError;

/// 3–64 characters of `[a-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let len = raw.chars().count();
        if !(3..=64).contains(&len) {
            return Err(FieldError::new(field, "must be 3 to 64 characters"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
        {
            return Err(FieldError::new(
                field,
                "may contain only lowercase letters, digits, '_', '.' and '-'",
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A syntactically valid address, stored lowercased so uniqueness ignores case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let trimmed = raw.trim();
        if trimmed.len() > 254 {
            return Err(FieldError::new(field, "must be at most 254 characters"));
        }
        if !email_address::EmailAddress::is_valid(trimmed) || !trimmed.contains('.') {
            return Err(FieldError::new(field, "must be a valid email address"));
        }
        Ok(Self(trimmed.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// 8–128 characters; never logged or displayed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let len = raw.chars().count();
        if !(8..=128).contains(&len) {
            return Err(FieldError::new(field, "must be 8 to 128 characters"));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Collects field errors while parsing several fields, so one response names them all.
#[derive(Debug, Default)]
pub struct Fields(Vec<FieldError>);

impl Fields {
    pub fn take<T>(&mut self, parsed: Result<T, FieldError>) -> Option<T> {
        parsed.map_err(|e| self.0.push(e)).ok()
    }

    pub fn optional<T>(&mut self, parsed: Option<Result<T, FieldError>>) -> Option<T> {
        parsed.and_then(|p| self.take(p))
    }

    pub fn finish(self) -> Result<(), mercato_kit::ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(mercato_kit::ApiError::validation(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_rules() {
        assert!(Username::parse("u", "ab").is_err());
        assert!(Username::parse("u", "abc").is_ok());
        assert!(Username::parse("u", "a.b_c-9").is_ok());
        assert!(Username::parse("u", "Alice").is_err());
        assert!(Username::parse("u", "al ice").is_err());
        assert!(Username::parse("u", &"a".repeat(65)).is_err());
        assert!(Username::parse("u", &"a".repeat(64)).is_ok());
    }

    #[test]
    fn emails_are_checked_and_lowercased() {
        assert_eq!(
            Email::parse("e", "A@Example.com").unwrap().as_str(),
            "a@example.com"
        );
        assert!(Email::parse("e", "not-an-email").is_err());
        assert!(Email::parse("e", "a@b").is_err());
    }

    #[test]
    fn passwords_are_counted_in_characters() {
        assert!(Password::parse("p", "1234567").is_err());
        assert!(Password::parse("p", "12345678").is_ok());
        assert!(Password::parse("p", &"é".repeat(128)).is_ok());
        assert!(Password::parse("p", &"x".repeat(129)).is_err());
    }
}
