//! Email delivery over SMTP (lettre), configured by `SMTP_URL` and `MAIL_FROM`.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// An attempt's outcome as the retry policy needs it.
#[derive(Debug)]
pub enum SendError {
    /// Try again later (connection refused, timeout, 4xx).
    Transient(String),
    /// Will never work (5xx such as a rejected address, a malformed address).
    Permanent(String),
}

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// `smtp://host:port` is plain (local sinks); `smtps://user:pass@host`
    /// is implicit TLS; `smtp://…?tls=required` is STARTTLS.
    pub fn from_url(url: &str, from: &str) -> Result<Mailer, String> {
        let from: Mailbox = from.parse().map_err(|e| format!("(MAIL_FROM) {e}"))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| e.to_string())?
            .timeout(Some(Duration::from_secs(20)))
            .build();
        Ok(Mailer { transport, from })
    }

    pub async fn send(&self, to: &str, subject: &str, text: &str) -> Result<(), SendError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| SendError::Permanent(format!("recipient address: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(
                text.to_owned(),
                html(subject, text),
            ))
            .map_err(|e| SendError::Permanent(format!("message: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
            Err(e) => Err(SendError::Transient(e.to_string())),
        }
    }
}

/// The HTML part: the same text, escaped, links made clickable.
fn html(subject: &str, text: &str) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let body: String = text
        .lines()
        .map(|line| {
            let l = escape(line);
            if line.starts_with("http://") || line.starts_with("https://") {
                format!("<p><a href=\"{l}\">{l}</a></p>")
            } else {
                format!("<p>{l}</p>")
            }
        })
        .collect();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body style=\"font-family:sans-serif\">{body}</body></html>",
        escape(subject)
    )
}
