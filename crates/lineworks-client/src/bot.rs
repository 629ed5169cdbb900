//! Bot management reads: does the bot exist, which domains is it added to, can it see the room.

use serde::Deserialize;

use super::client::{Call, Repeat, json, path_segment};
use super::credentials::{ExposeSecret, SecretString};
use super::{Api, LineWorksClient, LineWorksError};

/// Most pages followed for one list, a guard against a cursor that never ends.
const MAX_PAGES: usize = 100;

/// `GET /bots/{botId}`, the fields the operator uses.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Bot {
    pub bot_id: i64,
    pub bot_name: String,
    #[serde(default)]
    pub allow_domains: Vec<i64>,
}

/// One entry of `GET /bots/{botId}/domains`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BotDomain {
    pub domain_id: i64,
    #[serde(default)]
    pub visible: bool,
}

/// `GET /bots/{botId}/channels/{channelId}`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub channel_id: String,
    #[serde(default)]
    pub domain_id: Option<i64>,
    #[serde(default)]
    pub title: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    #[serde(flatten)]
    items: T,
    #[serde(default)]
    response_meta_data: Option<PageMeta>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageMeta {
    #[serde(default)]
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct Domains {
    domains: Vec<BotDomain>,
}

#[derive(Deserialize)]
struct Members {
    members: Vec<String>,
}

impl LineWorksClient {
    pub async fn get_bot(&self, token: &SecretString, bot_id: i64) -> Result<Bot, LineWorksError> {
        let url = self.api_url(&format!("/bots/{bot_id}"));
        let response = self.get(Api::GetBot, token, &url, None).await?;
        json(Api::GetBot, response).await
    }

    /// Every domain the bot is added to (all pages).
    pub async fn list_bot_domains(
        &self,
        token: &SecretString,
        bot_id: i64,
    ) -> Result<Vec<BotDomain>, LineWorksError> {
        let url = self.api_url(&format!("/bots/{bot_id}/domains"));
        self.paged(Api::ListBotDomains, token, &url, |d: Domains| d.domains)
            .await
    }

    pub async fn get_channel(
        &self,
        token: &SecretString,
        bot_id: i64,
        channel_id: &str,
    ) -> Result<Channel, LineWorksError> {
        let url = self.api_url(&format!(
            "/bots/{bot_id}/channels/{}",
            path_segment(channel_id)
        ));
        let response = self.get(Api::GetChannel, token, &url, None).await?;
        json(Api::GetChannel, response).await
    }

    /// Every member (user ID) of the room (all pages).
    pub async fn list_channel_members(
        &self,
        token: &SecretString,
        bot_id: i64,
        channel_id: &str,
    ) -> Result<Vec<String>, LineWorksError> {
        let url = self.api_url(&format!(
            "/bots/{bot_id}/channels/{}/members",
            path_segment(channel_id)
        ));
        self.paged(Api::ListChannelMembers, token, &url, |m: Members| m.members)
            .await
    }

    async fn paged<P, T>(
        &self,
        api: Api,
        token: &SecretString,
        url: &str,
        items: impl Fn(P) -> Vec<T>,
    ) -> Result<Vec<T>, LineWorksError>
    where
        P: serde::de::DeserializeOwned,
    {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let response = self.get(api, token, url, cursor.as_deref()).await?;
            let page: Page<P> = json(api, response).await?;
            all.extend(items(page.items));
            cursor = page
                .response_meta_data
                .and_then(|m| m.next_cursor)
                .filter(|c| !c.is_empty());
            if cursor.is_none() {
                return Ok(all);
            }
        }
        Err(LineWorksError::InvalidResponse {
            api,
            detail: format!("more than {MAX_PAGES} pages"),
        })
    }

    async fn get(
        &self,
        api: Api,
        token: &SecretString,
        url: &str,
        cursor: Option<&str>,
    ) -> Result<reqwest::Response, LineWorksError> {
        self.send(
            Call {
                api,
                repeat: Repeat::Harmless,
            },
            || {
                let request = self.http.get(url).bearer_auth(token.expose_secret());
                match cursor {
                    Some(c) => request.query(&[("cursor", c)]),
                    None => request,
                }
            },
        )
        .await
    }
}
