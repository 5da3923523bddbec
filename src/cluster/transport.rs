//! Transport failures in words: what stopped a request from reaching the API server
//! (connection refused, reset, a TLS failure, a timeout). A leaf both the error messages
//! ([`super::error`]) and the outage detector ([`super::outage`]) use.

/// The innermost cause of a transport failure, as words: the operating system's error
/// (connection refused, reset, timed out), a TLS failure, or a timeout.
pub fn transport_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = err;
    let mut innermost = None;
    loop {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            innermost = Some(io_words(io));
        }
        if cause.to_string().contains("deadline has elapsed") {
            return "no answer in time (timed out)".into();
        }
        match cause.source() {
            Some(next) => cause = next,
            None => break,
        }
    }
    innermost.unwrap_or_else(|| {
        // Without an I/O error, the last message in the chain is the most specific one.
        let text = cause.to_string();
        if text.is_empty() {
            "the connection failed".into()
        } else {
            text
        }
    })
}

fn io_words(io: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match io.kind() {
        ConnectionRefused => "connection refused (is it running?)".into(),
        ConnectionReset => "the connection was reset".into(),
        ConnectionAborted => "the connection was aborted".into(),
        TimedOut => "no answer in time (timed out)".into(),
        NotFound => "the host name could not be resolved".into(),
        BrokenPipe | UnexpectedEof => "the connection was closed by the server".into(),
        _ => {
            // Drop the "(os error N)" suffix: the words are enough.
            let text = io.to_string();
            match text.split_once(" (os error") {
                Some((words, _)) => words.to_lowercase(),
                None => text,
            }
        }
    }
}
