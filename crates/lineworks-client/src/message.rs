//! Bot messages to a user (DM) or a talk room. The content is checked against the documented
//! limits before sending, so a too-long text fails here with a clear error instead of at LINE WORKS.

use serde::Serialize;

use super::client::{Call, Repeat, path_segment};
use super::credentials::{ExposeSecret, SecretString};
use super::{Api, LineWorksClient, LineWorksError};

/// Longest text message, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;
/// Longest link-message field, in characters.
pub const MAX_LINK_FIELD_CHARS: usize = 1000;
/// Most actions in a button template.
pub const MAX_ACTIONS: usize = 10;

/// Message content (`{"content": {...}}`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text {
        text: String,
        #[serde(rename = "i18nTexts", skip_serializing_if = "Vec::is_empty")]
        i18n_texts: Vec<I18nText>,
    },
    Link {
        #[serde(rename = "contentText")]
        content_text: String,
        #[serde(rename = "linkText")]
        link_text: String,
        link: String,
    },
    ButtonTemplate {
        #[serde(rename = "contentText")]
        content_text: String,
        actions: Vec<Action>,
    },
}

/// Text for one language: `ja_JP`, `en_US`, `ko_KR`, `zh_CN` or `zh_TW`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct I18nText {
    pub language: String,
    pub text: String,
}

/// A button of a button template.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Uri {
        label: String,
        uri: String,
    },
    Message {
        label: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        postback: Option<String>,
    },
}

impl Content {
    /// A plain text message.
    pub fn text(text: impl Into<String>) -> Self {
        Content::Text {
            text: text.into(),
            i18n_texts: Vec::new(),
        }
    }

    /// Checks the documented limits.
    pub fn validate(&self) -> Result<(), LineWorksError> {
        let check = |what: &str, value: &str, max: usize| {
            let chars = value.chars().count();
            if chars == 0 {
                Err(LineWorksError::InvalidRequest(format!("{what} is empty")))
            } else if chars > max {
                Err(LineWorksError::InvalidRequest(format!(
                    "{what} has {chars} characters; LINE WORKS accepts at most {max}"
                )))
            } else {
                Ok(())
            }
        };
        match self {
            Content::Text { text, i18n_texts } => {
                check("text", text, MAX_TEXT_CHARS)?;
                for t in i18n_texts {
                    if !["ja_JP", "en_US", "ko_KR", "zh_CN", "zh_TW"].contains(&t.language.as_str())
                    {
                        return Err(LineWorksError::InvalidRequest(format!(
                            "i18n language {:?} is not one of ja_JP, en_US, ko_KR, zh_CN, zh_TW",
                            t.language
                        )));
                    }
                    check("i18n text", &t.text, MAX_TEXT_CHARS)?;
                }
                Ok(())
            }
            Content::Link {
                content_text,
                link_text,
                link,
            } => {
                check("contentText", content_text, MAX_LINK_FIELD_CHARS)?;
                check("linkText", link_text, MAX_LINK_FIELD_CHARS)?;
                check("link", link, MAX_LINK_FIELD_CHARS)
            }
            Content::ButtonTemplate {
                content_text,
                actions,
            } => {
                check("contentText", content_text, MAX_LINK_FIELD_CHARS)?;
                if actions.is_empty() || actions.len() > MAX_ACTIONS {
                    return Err(LineWorksError::InvalidRequest(format!(
                        "a button template needs 1 to {MAX_ACTIONS} actions, not {}",
                        actions.len()
                    )));
                }
                Ok(())
            }
        }
    }
}

#[derive(Serialize)]
struct MessageBody<'a> {
    content: &'a Content,
}

impl LineWorksClient {
    /// DM to a user, by user ID or login ID (`user@domain`).
    pub async fn send_to_user(
        &self,
        token: &SecretString,
        bot_id: i64,
        user: &str,
        content: &Content,
    ) -> Result<(), LineWorksError> {
        let url = self.api_url(&format!(
            "/bots/{bot_id}/users/{}/messages",
            path_segment(user)
        ));
        self.post_message(Api::SendUserMessage, token, &url, content)
            .await
    }

    /// Message to a talk room, by channel ID.
    pub async fn send_to_channel(
        &self,
        token: &SecretString,
        bot_id: i64,
        channel_id: &str,
        content: &Content,
    ) -> Result<(), LineWorksError> {
        let url = self.api_url(&format!(
            "/bots/{bot_id}/channels/{}/messages",
            path_segment(channel_id)
        ));
        self.post_message(Api::SendChannelMessage, token, &url, content)
            .await
    }

    /// This client reduced to sending messages.
    pub fn into_sender(self) -> MessageSender {
        MessageSender(self)
    }

    async fn post_message(
        &self,
        api: Api,
        token: &SecretString,
        url: &str,
        content: &Content,
    ) -> Result<(), LineWorksError> {
        content.validate()?;
        let body = serde_json::to_vec(&MessageBody { content })
            .map_err(|e| LineWorksError::InvalidRequest(format!("encoding the message: {e}")))?;
        // A 201 may come with an empty body: success is the status alone.
        self.send(
            Call {
                api,
                repeat: Repeat::AtLeastOnce,
            },
            || {
                self.http
                    .post(url)
                    .bearer_auth(token.expose_secret())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
            },
        )
        .await?;
        Ok(())
    }
}

/// The send-only view of a client: what a holder of someone else's access token (the relay) may
/// do with it. It cannot request, refresh or revoke tokens, so "the relay never refreshes tokens"
/// is a fact the compiler checks rather than a convention.
#[derive(Clone, Debug)]
pub struct MessageSender(LineWorksClient);

impl MessageSender {
    /// DM to a user, by user ID or login ID (`user@domain`).
    pub async fn send_to_user(
        &self,
        token: &SecretString,
        bot_id: i64,
        user: &str,
        content: &Content,
    ) -> Result<(), LineWorksError> {
        self.0.send_to_user(token, bot_id, user, content).await
    }

    /// Message to a talk room, by channel ID.
    pub async fn send_to_channel(
        &self,
        token: &SecretString,
        bot_id: i64,
        channel_id: &str,
        content: &Content,
    ) -> Result<(), LineWorksError> {
        self.0
            .send_to_channel(token, bot_id, channel_id, content)
            .await
    }
}
