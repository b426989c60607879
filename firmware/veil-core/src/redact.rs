//! URLs as they may be shown in logs, events and replies: a credential travels in a URL's
//! userinfo or in its query (`?token=…`, presigned signatures), so both are replaced.

/// `url` with the password of its userinfo as `***` and its query and fragment as `?***` /
/// `#***`. Text that is no `scheme://` URL comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let (path, hidden) = match tail.find(['?', '#']) {
        Some(i) => (
            &tail[..i],
            if tail[i..].starts_with('?') {
                "?***"
            } else {
                "#***"
            },
        ),
        None => (tail, ""),
    };
    format!("{scheme}://{authority}{path}{hidden}")
}

/// `text` with every appearance of `url` (as given, and as a URL parser prints it) redacted.
pub fn redact_url_in(text: &str, url: &str) -> String {
    let shown = redact_url(url);
    let mut out = text.to_string();
    for form in [url.to_string(), url.trim_end_matches('/').to_string()] {
        if !form.is_empty() && form != shown {
            out = out.replace(&form, &shown);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_userinfo_query_and_fragment_are_hidden() {
        for (url, want) in [
            (
                "https://ingest.example/whip?token=s3cret&x=1",
                "https://ingest.example/whip?***",
            ),
            (
                "rtsp://admin:hunter2@10.0.0.5:554/stream1",
                "rtsp://admin:***@10.0.0.5:554/stream1",
            ),
            ("https://u:p@host?sig=abc#frag", "https://u:***@host?***"),
            ("https://host/a#t=1", "https://host/a#***"),
            ("https://user@host/p", "https://user@host/p"),
            ("https://host/plain", "https://host/plain"),
            ("not a url ?x=1", "not a url ?x=1"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn a_url_inside_a_message_is_redacted_wherever_it_appears() {
        let url = "https://ingest.example/whip?token=s3cret";
        let text = format!("cannot reach {url}: refused ({url})");
        let out = redact_url_in(&text, url);
        assert!(!out.contains("s3cret"), "{out}");
        assert_eq!(out.matches("https://ingest.example/whip?***").count(), 2);
    }
}
