// Customer identity input (email, password, name) is checked once at sign-up
// and login so the rest of the system handles only well-formed values, and
// emails are masked wherever they could end up in logs.

use std::fmt;

use crate::error::LedgerError;

/// RFC 5321 limits, in bytes.
const MAX_EMAIL_LEN: usize = 254;
const MAX_LOCAL_PART_LEN: usize = 64;

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_CHARS: usize = 256;

pub const MAX_FULL_NAME_CHARS: usize = 200;

/// A trimmed, lowercased email address of plausible shape. Its `Debug` output
/// is masked so that `{:?}` in a log line cannot leak the address.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(input: &str) -> Result<Email, LedgerError> {
        let email = input.trim().to_lowercase();
        if is_plausible_email(&email) {
            Ok(Email(email))
        } else {
            Err(LedgerError::BadInput("email address is not valid".into()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// First character of the local part, then "***@domain": enough to tell
    /// accounts apart in logs without revealing the address.
    pub fn masked(&self) -> String {
        let (local, domain) = self
            .0
            .split_once('@')
            .expect("Email always contains exactly one '@'");
        let first = local.chars().next().expect("local part is never empty");
        format!("{first}***@{domain}")
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.masked())
    }
}

fn is_plausible_email(email: &str) -> bool {
    if email.len() > MAX_EMAIL_LEN || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    if local.is_empty() || local.len() > MAX_LOCAL_PART_LEN || domain.contains('@') {
        return false;
    }
    // At least two labels and none empty: rules out "a@b", "a@.b", "a@b.", "a@b..c".
    domain.contains('.') && domain.split('.').all(|label| !label.is_empty())
}

/// Length-only policy: long passphrases beat composition rules. Counted in
/// characters, not bytes, so non-ASCII passwords are not penalised or favoured.
pub fn check_password_policy(password: &str) -> Result<(), LedgerError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(LedgerError::BadInput(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(LedgerError::BadInput(format!(
            "password must be at most {MAX_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

/// A customer's name as they write it: any script, trimmed, 1..=200 characters,
/// no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FullName(String);

impl FullName {
    pub fn parse(input: &str) -> Result<FullName, LedgerError> {
        let name = input.trim();
        if name.is_empty() {
            return Err(LedgerError::BadInput("full name is required".into()));
        }
        if name.chars().count() > MAX_FULL_NAME_CHARS {
            return Err(LedgerError::BadInput(format!(
                "full name must be at most {MAX_FULL_NAME_CHARS} characters"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(LedgerError::BadInput(
                "full name must not contain control characters".into(),
            ));
        }
        Ok(FullName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVALID_EMAIL: &str = "email address is not valid";

    // LedgerError has no PartialEq, so tests compare variant and message.
    fn bad_input<T: std::fmt::Debug>(result: Result<T, LedgerError>) -> String {
        match result {
            Err(LedgerError::BadInput(message)) => message,
            other => panic!("expected BadInput, got {other:?}"),
        }
    }

    // --- Email ---

    #[test]
    fn trims_and_lowercases_emails() {
        let email = Email::parse("  Alice.Smith@Example.COM \n").unwrap();
        assert_eq!(email.as_str(), "alice.smith@example.com");
        assert_eq!(email, Email::parse("alice.smith@example.com").unwrap());
    }

    #[test]
    fn accepts_common_email_shapes() {
        for input in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "x_y-z@mail.example.co.uk",
            "jürgen@bücher.de",
        ] {
            assert!(Email::parse(input).is_ok(), "{input}");
        }
    }

    #[test]
    fn rejects_malformed_emails() {
        for input in [
            "",
            "   ",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "alice@@example.com",
            "alice@bob@example.com",
            "alice@.example.com",
            "alice@example.com.",
            "alice@example..com",
            "al ice@example.com",
            "alice@exa mple.com",
            "alice\u{0}@example.com",
            "alice@example.com\u{7}",
            "alice\t@example.com",
        ] {
            assert_eq!(bad_input(Email::parse(input)), INVALID_EMAIL, "{input:?}");
        }
    }

    #[test]
    fn enforces_the_local_part_and_total_length_limits() {
        let local_64 = "a".repeat(64);
        assert!(Email::parse(&format!("{local_64}@example.com")).is_ok());
        assert_eq!(
            bad_input(Email::parse(&format!("a{local_64}@example.com"))),
            INVALID_EMAIL
        );

        // 64 + 1 + 189 = 254 bytes.
        let domain_189 = format!("{}.com", "d".repeat(185));
        let at_limit = format!("{local_64}@{domain_189}");
        assert_eq!(at_limit.len(), 254);
        assert!(Email::parse(&at_limit).is_ok());
        assert_eq!(
            bad_input(Email::parse(&format!("{local_64}@d{domain_189}"))),
            INVALID_EMAIL
        );
    }

    #[test]
    fn masks_all_but_the_first_character_of_the_local_part() {
        assert_eq!(
            Email::parse("alice@example.com").unwrap().masked(),
            "a***@example.com"
        );
        assert_eq!(
            Email::parse("a@example.com").unwrap().masked(),
            "a***@example.com"
        );
        assert_eq!(
            Email::parse("Émile@example.fr").unwrap().masked(),
            "é***@example.fr"
        );
    }

    #[test]
    fn debug_output_never_contains_the_full_address() {
        let email = Email::parse("alice@example.com").unwrap();
        let debug = format!("{email:?}");
        assert!(!debug.contains("alice"), "{debug}");
        assert_eq!(debug, "Email(a***@example.com)");
    }

    // --- password policy ---

    #[test]
    fn accepts_passwords_of_10_to_256_characters() {
        assert!(check_password_policy("0123456789").is_ok());
        assert!(check_password_policy(&"p".repeat(256)).is_ok());
    }

    #[test]
    fn rejects_passwords_shorter_than_10_characters() {
        assert_eq!(
            bad_input(check_password_policy("012345678")),
            "password must be at least 10 characters"
        );
        assert!(check_password_policy("").is_err());
    }

    #[test]
    fn counts_password_length_in_characters_not_bytes() {
        // Nine characters but eighteen bytes.
        assert!(check_password_policy(&"é".repeat(9)).is_err());
        assert!(check_password_policy(&"é".repeat(10)).is_ok());
        assert!(check_password_policy(&"é".repeat(256)).is_ok());
    }

    #[test]
    fn rejects_passwords_longer_than_256_characters() {
        assert_eq!(
            bad_input(check_password_policy(&"p".repeat(257))),
            "password must be at most 256 characters"
        );
    }

    // --- FullName ---

    #[test]
    fn trims_full_names_and_keeps_any_script() {
        assert_eq!(
            FullName::parse("  Ada Lovelace ").unwrap().as_str(),
            "Ada Lovelace"
        );
        assert_eq!(FullName::parse("山田 太郎").unwrap().as_str(), "山田 太郎");
        assert_eq!(FullName::parse("X").unwrap().as_str(), "X");
    }

    #[test]
    fn rejects_an_empty_or_blank_full_name() {
        for input in ["", "   ", "\n\t"] {
            assert_eq!(
                bad_input(FullName::parse(input)),
                "full name is required",
                "{input:?}"
            );
        }
    }

    #[test]
    fn limits_full_names_to_200_characters() {
        assert!(FullName::parse(&"é".repeat(200)).is_ok());
        assert_eq!(
            bad_input(FullName::parse(&"é".repeat(201))),
            "full name must be at most 200 characters"
        );
    }

    #[test]
    fn rejects_control_characters_in_full_names() {
        for input in ["Ada\nLovelace", "Ada\u{0}", "Ada\u{1b}[31m", "A\u{7f}da"] {
            assert_eq!(
                bad_input(FullName::parse(input)),
                "full name must not contain control characters",
                "{input:?}"
            );
        }
    }
}
