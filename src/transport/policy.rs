//! Per-channel authorization rules: channel patterns, the actions they grant, and which
//! channels need a signed token for which action.
//!
//! Implements:
//! - [`ChannelPattern`]: `*` (every channel), a prefix ending in `*` (`chat.*`), or one exact
//!   channel name; what a token's grants and a server's policies are written in.
//! - [`Action`]: subscribe (every way of reading a channel), publish, presence.
//! - [`Policies`]: `--channel-policy 'PATTERN=token'` (subscribe, publish and presence on
//!   matching channels need a token granting them) and `'PATTERN=publish-token'` (only
//!   publishing does); the first matching policy wins; unmatched channels stay anonymous.
//!
//! Does not: verify tokens (see [`super::token`]) or read requests (see [`super::access`]).

use std::fmt;

use crate::hub::ChannelName;

/// What a client does with a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read it, on any transport.
    Subscribe,
    /// Publish to it.
    Publish,
    /// Read its presence (members, count) or appear in it with a user id.
    Presence,
}

impl Action {
    /// The claim that grants it in a token, and its name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
            Action::Presence => "presence",
        }
    }
}

/// A set of channels: every channel, the channels starting with a prefix, or one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelPattern {
    /// `*`: every channel.
    Any,
    /// `PREFIX*`: every channel whose name starts with `PREFIX` (itself non-empty).
    Prefix(Box<str>),
    /// One channel, by its exact name.
    Exact(Box<str>),
}

/// Why a pattern text was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatternError {
    /// Empty, longer than a channel name, or holding a character no channel name has, or a
    /// `*` anywhere but at the end.
    Invalid,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a channel pattern is *, a channel-name prefix ending in *, or a channel name")
    }
}

impl std::error::Error for PatternError {}

impl ChannelPattern {
    /// Parses `*`, `PREFIX*` or a channel name (at most [`ChannelName::MAX_BYTES`] bytes of
    /// the channel alphabet besides the final `*`).
    pub fn parse(text: &str) -> Result<ChannelPattern, PatternError> {
        if text == "*" {
            return Ok(ChannelPattern::Any);
        }
        let (name, prefix) = match text.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (text, false),
        };
        let valid = (1..=ChannelName::MAX_BYTES).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
        if !valid {
            return Err(PatternError::Invalid);
        }
        Ok(if prefix { ChannelPattern::Prefix(name.into()) } else { ChannelPattern::Exact(name.into()) })
    }

    /// True when `channel` is in the set.
    pub fn matches(&self, channel: &str) -> bool {
        match self {
            ChannelPattern::Any => true,
            ChannelPattern::Prefix(prefix) => channel.starts_with(&**prefix),
            ChannelPattern::Exact(name) => channel == &**name,
        }
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelPattern::Any => f.write_str("*"),
            ChannelPattern::Prefix(prefix) => write!(f, "{prefix}*"),
            ChannelPattern::Exact(name) => f.write_str(name),
        }
    }
}

/// What a policy asks of the clients of its channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Subscribe, publish and presence need a token granting them.
    Token,
    /// Publishing needs a token granting it; reading is anonymous.
    PublishToken,
}

/// One `PATTERN=REQUIREMENT` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPolicy {
    /// The channels it covers.
    pub pattern: ChannelPattern,
    /// What their clients need.
    pub requirement: Requirement,
}

impl ChannelPolicy {
    /// Parses `PATTERN=token` or `PATTERN=publish-token`.
    pub fn parse(text: &str) -> Result<ChannelPolicy, String> {
        let (pattern, requirement) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected PATTERN=token or PATTERN=publish-token"))?;
        let pattern = ChannelPattern::parse(pattern).map_err(|e| format!("{text:?}: {e}"))?;
        let requirement = match requirement {
            "token" => Requirement::Token,
            "publish-token" => Requirement::PublishToken,
            other => return Err(format!("{text:?}: unknown requirement {other:?} (token or publish-token)")),
        };
        Ok(ChannelPolicy { pattern, requirement })
    }
}

impl fmt::Display for ChannelPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let requirement = match self.requirement {
            Requirement::Token => "token",
            Requirement::PublishToken => "publish-token",
        };
        write!(f, "{}={requirement}", self.pattern)
    }
}

/// The server's per-channel policies, in order; the first match decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies(pub Vec<ChannelPolicy>);

impl Policies {
    /// True when `action` on `channel` needs a token granting it.
    pub fn needs_token(&self, channel: &str, action: Action) -> bool {
        match self.0.iter().find(|p| p.pattern.matches(channel)).map(|p| p.requirement) {
            Some(Requirement::Token) => true,
            Some(Requirement::PublishToken) => action == Action::Publish,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_match_and_print_back() {
        for (text, yes, no) in [
            ("*", "anything", None),
            ("chat.*", "chat.lobby", Some("chatter")),
            ("chat*", "chatter", Some("news")),
            ("news", "news", Some("news.eu")),
        ] {
            let p = ChannelPattern::parse(text).unwrap();
            assert!(p.matches(yes), "{text} vs {yes}");
            if let Some(no) = no {
                assert!(!p.matches(no), "{text} vs {no}");
            }
            assert_eq!(p.to_string(), text);
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        let long = "a".repeat(ChannelName::MAX_BYTES + 1);
        for text in ["", "**", "*a", "a*b*", "a b", "chat/*", "é*", long.as_str()] {
            assert_eq!(ChannelPattern::parse(text), Err(PatternError::Invalid), "{text:?}");
        }
    }

    #[test]
    fn first_matching_policy_decides() {
        let policies = Policies(vec![
            ChannelPolicy::parse("private.open=publish-token").unwrap(),
            ChannelPolicy::parse("private.*=token").unwrap(),
        ]);
        assert!(policies.needs_token("private.alice", Action::Subscribe));
        assert!(policies.needs_token("private.alice", Action::Presence));
        assert!(!policies.needs_token("private.open", Action::Subscribe));
        assert!(policies.needs_token("private.open", Action::Publish));
        assert!(!policies.needs_token("public", Action::Publish));
        assert_eq!(policies.0[1].to_string(), "private.*=token");
    }

    #[test]
    fn bad_policies_name_the_problem() {
        assert!(ChannelPolicy::parse("chat.*").unwrap_err().contains("PATTERN=token"));
        assert!(ChannelPolicy::parse("chat.*=maybe").unwrap_err().contains("unknown requirement"));
        assert!(ChannelPolicy::parse("a b=token").unwrap_err().contains("channel pattern"));
    }
}
