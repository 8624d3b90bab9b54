//! Channel names: short, URL-safe strings that key the hub's channel map.
//!
//! Implements: validation of a channel name (1 to 128 bytes of the RFC 3986 §2.3 unreserved
//! characters `A-Z a-z 0-9 . _ ~ -`, but not the dot-segments `.` and `..`), so a name can sit
//! in a request path, a query parameter or a log line without escaping
//! (<https://www.rfc-editor.org/rfc/rfc3986#section-2.3>).
//!
//! Does not: percent-decode (the transport hands over the decoded text) or normalise case
//! (`News` and `news` are two channels).

use arcstr::ArcStr;

use crate::hub::HubError;

/// A validated channel name. Cloning is a reference-count increment; names order by bytes.
/// One pointer (8 bytes; `Arc<str>` is 16): every idle subscription holds one in its slot and
/// one in its session's feed (issue #16, idle memory), and `Option<ChannelName>` is 8 bytes too.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelName(ArcStr);

impl ChannelName {
    /// Longest channel name, in bytes.
    pub const MAX_BYTES: usize = 128;

    /// Validates `text` (1 to [`Self::MAX_BYTES`] bytes, each one of `A-Z a-z 0-9 . _ ~ -`,
    /// and neither `.` nor `..`) before allocating; anything else is
    /// [`HubError::InvalidChannelName`].
    pub fn parse(text: &str) -> Result<ChannelName, HubError> {
        // RFC 3986 §2.3: unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"
        // RFC 3986 §5.2.4: the segments "." and ".." are removed when a reference is resolved,
        // so browsers, curl and normalizing proxies never send `/channels/..` as written (it
        // becomes `/`): such a channel could not be reached, or a proxy would route it elsewhere.
        let valid = (1..=Self::MAX_BYTES).contains(&text.len())
            && !matches!(text, "." | "..")
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
        if !valid {
            return Err(HubError::InvalidChannelName);
        }
        Ok(ChannelName(ArcStr::from(text)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_name_accepts_unreserved_characters() {
        let all = "AZaz09._~-";
        assert_eq!(ChannelName::parse(all).unwrap().as_str(), all);
        let longest = "a".repeat(ChannelName::MAX_BYTES);
        assert_eq!(ChannelName::parse(&longest).unwrap().as_str(), longest);
    }

    #[test]
    fn channel_name_rejections() {
        let too_long = "a".repeat(ChannelName::MAX_BYTES + 1);
        for text in ["", "a b", "a/b", "a%20", "a?", "a#", "a:b", "é", "a\0", "a\n", &too_long] {
            assert_eq!(ChannelName::parse(text), Err(HubError::InvalidChannelName), "{text:?}");
        }
        assert_eq!(HubError::InvalidChannelName.status_hint(), 400);
    }

    #[test]
    fn rfc3986_5_2_4_dot_segments_are_not_channel_names() {
        for text in [".", ".."] {
            assert_eq!(ChannelName::parse(text), Err(HubError::InvalidChannelName), "{text:?}");
        }
        for text in ["...", ".a", "a..", "..a"] {
            assert!(ChannelName::parse(text).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn channel_name_is_one_pointer() {
        assert_eq!(std::mem::size_of::<ChannelName>(), 8);
        assert_eq!(std::mem::size_of::<Option<ChannelName>>(), 8);
    }

    #[test]
    fn channel_name_clone_shares_text_and_compares_by_value() {
        let a = ChannelName::parse("news").unwrap();
        let b = a.clone();
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert_eq!(a, ChannelName::parse("news").unwrap());
        assert_ne!(a, ChannelName::parse("News").unwrap());
    }
}
