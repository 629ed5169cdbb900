//! Message text from a notifier's templates. Placeholders are `{{name}}`, `{{company}}`,
//! `{{count}}`, `{{purpose}}`, `{{note}}` and `{{host}}`. Substitution is one pass over the
//! template: a visitor field that itself contains `{{…}}` stays literal text, so input can never
//! pull in other fields or template syntax. Control characters (other than line breaks) and bidi
//! overrides are dropped from field values, and the result is cut to LINE WORKS's 2,000 characters.

use crate::api::{LineWorksNotifier, MessageTemplate};
use lineworks_client::{Content, I18nText, MAX_TEXT_CHARS};

/// Japanese default for a visitor notification.
pub const DEFAULT_VISITOR_TEXT: &str = "【来客通知】{{company}} {{name}} 様（{{count}}名）が {{host}} 様を訪ねて来られました。\n用件: {{purpose}}\n{{note}}";

/// The visitor fields a template may use.
#[derive(Debug, Default, Clone)]
pub struct Fields<'a> {
    pub name: &'a str,
    pub company: &'a str,
    pub count: Option<u32>,
    pub purpose: &'a str,
    pub note: &'a str,
    pub host: &'a str,
}

/// Drops control characters (keeping line breaks) and bidirectional overrides, which could make
/// a message read differently from what was sent.
fn clean(value: &str) -> String {
    value
        .chars()
        .filter(|c| *c == '\n' || !(c.is_control() || matches!(c, '\u{200e}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')))
        .collect()
}

/// Renders one template text.
pub fn render(template: &str, fields: &Fields<'_>) -> String {
    let count = fields.count.map(|c| c.to_string()).unwrap_or_default();
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let value = match after[..end].trim() {
            "name" => clean(fields.name),
            "company" => clean(fields.company),
            "count" => count.clone(),
            "purpose" => clean(fields.purpose),
            "note" => clean(fields.note),
            "host" => clean(fields.host),
            // Unknown placeholders stay as written, visible to whoever fixes the template.
            _ => rest[start..start + 2 + end + 2].to_string(),
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    truncate(out.trim_end())
}

/// Cuts to the message limit, marking the cut.
fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_TEXT_CHARS {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_TEXT_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// The visitor notification content: the template (or the Japanese default), with its i18n variants.
pub fn visitor_content(
    notifier: &LineWorksNotifier,
    fields: &Fields<'_>,
    text_override: Option<&str>,
) -> Content {
    if let Some(text) = text_override {
        return Content::text(truncate(&clean(text)));
    }
    let template = notifier
        .spec
        .templates
        .as_ref()
        .and_then(|t| t.visitor.as_ref());
    content(template, DEFAULT_VISITOR_TEXT, fields)
}

/// Content from a template with i18n variants, or from `default` when there is none.
pub fn content(template: Option<&MessageTemplate>, default: &str, fields: &Fields<'_>) -> Content {
    match template {
        None => Content::text(render(default, fields)),
        Some(t) => Content::Text {
            text: render(&t.text, fields),
            i18n_texts: t
                .i18n_texts
                .iter()
                .map(|v| I18nText {
                    language: v.language.to_string(),
                    text: render(&v.text, fields),
                })
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(name: &'a str) -> Fields<'a> {
        Fields {
            name,
            company: "株式会社サンプル",
            count: Some(2),
            purpose: "打ち合わせ",
            note: "",
            host: "山田",
        }
    }

    #[test]
    fn japanese_default_renders_every_field() {
        let text = render(DEFAULT_VISITOR_TEXT, &fields("佐藤"));
        assert_eq!(
            text,
            "【来客通知】株式会社サンプル 佐藤 様（2名）が 山田 様を訪ねて来られました。\n用件: 打ち合わせ"
        );
    }

    #[test]
    fn hostile_input_cannot_inject_template_syntax_or_control_characters() {
        let text = render(
            "{{name}} / {{company}}",
            &fields("{{company}}\u{0007}\u{202e}x"),
        );
        assert_eq!(text, "{{company}}x / 株式会社サンプル");
        assert_eq!(
            render("{{unknown}} {{name", &fields("a")),
            "{{unknown}} {{name"
        );
    }

    #[test]
    fn long_output_is_cut_to_the_limit() {
        let long = "あ".repeat(3000);
        let text = render("{{name}}", &fields(&long));
        assert_eq!(text.chars().count(), MAX_TEXT_CHARS);
        assert!(text.ends_with('…'));
    }
}
