//! Message text from a notifier's templates, one renderer for the relay's notifications and the
//! controller's test notification.
//!
//! Placeholders are `{{name}}`, `{{company}}`, `{{count}}`, `{{purpose}}`, `{{note}}`, `{{host}}`
//! (as the caller wrote it: a login ID or the part before `@`) and `{{hostName}}` (the host's
//! display name, when the caller gives one). A part written `[[…]]` is left out when a placeholder
//! in it is empty, so a message never shows "（名）" or "担当: " with nothing after it.
//! Substitution is one pass over the template: a visitor field that itself contains `{{…}}` or
//! `[[…]]` stays literal text, so input can never pull in other fields or template syntax. Control
//! characters (other than line breaks), bidi controls and zero-width characters are dropped from
//! field values, and the result is cut to LINE WORKS's 2,000 characters.

use std::borrow::Cow;

use crate::api::{LineWorksNotifier, MessageTemplate};
use lineworks_client::{Content, I18nText, MAX_TEXT_CHARS};

/// Japanese default for a visitor notification, as a Japanese reception system words it.
pub const DEFAULT_VISITOR_TEXT: &str = "【来客】[[{{company}} ]][[{{name}}様]][[（{{count}}名）]]がお見えです。[[\n担当：{{hostName}}]][[\n用件：{{purpose}}]][[\n{{note}}]]";

/// The visitor fields a template may use.
#[derive(Debug, Default, Clone)]
pub struct Fields<'a> {
    pub name: &'a str,
    pub company: &'a str,
    pub count: Option<u32>,
    pub purpose: &'a str,
    pub note: &'a str,
    pub host: &'a str,
    pub host_name: &'a str,
}

/// Drops control characters (keeping line breaks), bidirectional controls and zero-width
/// characters, which could make a message read differently from what was sent. Borrowed when
/// there is nothing to drop (nearly always), so a clean value costs no copy.
pub fn clean(value: &str) -> Cow<'_, str> {
    let dropped = |c: char| c != '\n' && lineworks_client::hides_text(c);
    if value.chars().any(dropped) {
        Cow::Owned(value.chars().filter(|c| !dropped(*c)).collect())
    } else {
        Cow::Borrowed(value)
    }
}

/// Renders one template text.
pub fn render(template: &str, fields: &Fields<'_>) -> String {
    let mut text = render_with(template, &|name| fields.value(name));
    text.truncate(text.trim_end().len());
    truncate_owned(text)
}

impl<'a> Fields<'a> {
    /// The value of placeholder `name`, cleaned; `None` for a name that is not a placeholder.
    fn value(&self, name: &str) -> Option<Cow<'a, str>> {
        Some(match name {
            "name" => clean(self.name),
            "company" => clean(self.company),
            "count" => self.count.map(|c| c.to_string()).unwrap_or_default().into(),
            "purpose" => clean(self.purpose),
            "note" => clean(self.note),
            "host" => clean(self.host),
            "hostName" => clean(self.host_name),
            _ => return None,
        })
    }
}

/// A placeholder's value, as [`render_with`] looks it up.
pub type Lookup<'l, 'v> = &'l dyn Fn(&str) -> Option<Cow<'v, str>>;

/// Renders `template` with the placeholder values `lookup` gives (already cleaned), uncut: one
/// pass, so a value that itself contains `{{…}}` or `[[…]]` stays literal text. A placeholder
/// `lookup` does not know stays as written, visible to whoever fixes the template. Written into
/// one buffer: a `[[…]]` part with an empty placeholder is cut off again.
pub fn render_with(template: &str, lookup: Lookup<'_, '_>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("[[") {
        substitute(&mut out, &rest[..start], lookup);
        let after = &rest[start + 2..];
        let Some(end) = after.find("]]") else {
            substitute(&mut out, &rest[start..], lookup);
            rest = "";
            break;
        };
        let mark = out.len();
        if !substitute(&mut out, &after[..end], lookup) {
            out.truncate(mark);
        }
        rest = &after[end + 2..];
    }
    substitute(&mut out, rest, lookup);
    out
}

/// Appends `text` to `out` with its placeholders substituted; says whether every placeholder
/// had a value.
fn substitute(out: &mut String, text: &str, lookup: Lookup<'_, '_>) -> bool {
    let mut complete = true;
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        match lookup(after[..end].trim()) {
            Some(value) => {
                complete &= !value.trim().is_empty();
                out.push_str(&value);
            }
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    complete
}

/// Cuts to the message limit, marking the cut.
pub fn truncate(text: &str) -> String {
    truncate_owned(text.to_string())
}

/// [`truncate`] of a text already owned: no copy when it fits.
fn truncate_owned(text: String) -> String {
    if text.chars().count() <= MAX_TEXT_CHARS {
        return text;
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

/// The test notification content (the console's テスト通知), rendered like any other message.
pub fn test_content(notifier: &LineWorksNotifier) -> Content {
    let template = notifier
        .spec
        .templates
        .as_ref()
        .and_then(|t| t.test.as_ref());
    content(
        template,
        crate::api::contract::DEFAULT_TEST_TEXT,
        &Fields::default(),
    )
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
            host: "yamada",
            host_name: "山田",
        }
    }

    #[test]
    fn japanese_default_renders_every_field() {
        let text = render(DEFAULT_VISITOR_TEXT, &fields("佐藤"));
        assert_eq!(
            text,
            "【来客】株式会社サンプル 佐藤様（2名）がお見えです。\n担当：山田\n用件：打ち合わせ"
        );
    }

    #[test]
    fn empty_parts_are_left_out() {
        let only_name = Fields {
            name: "佐藤",
            ..Default::default()
        };
        assert_eq!(
            render(DEFAULT_VISITOR_TEXT, &only_name),
            "【来客】佐藤様がお見えです。"
        );
        let no_count = Fields {
            count: None,
            purpose: " ",
            ..fields("佐藤")
        };
        assert_eq!(
            render(DEFAULT_VISITOR_TEXT, &no_count),
            "【来客】株式会社サンプル 佐藤様がお見えです。\n担当：山田"
        );
        // Section syntax inside a field value is literal text.
        assert_eq!(
            render("[[{{name}}]]", &fields("[[x]] {{note}}")),
            "[[x]] {{note}}"
        );
        assert_eq!(render("a [[b", &fields("x")), "a [[b");
    }

    #[test]
    fn hostile_input_cannot_inject_template_syntax_or_control_characters() {
        let text = render(
            "{{name}} / {{company}}",
            &fields("{{company}}\u{0007}\u{202e}\u{061c}\u{200b}\u{feff}x"),
        );
        assert_eq!(text, "{{company}}x / 株式会社サンプル");
        assert_eq!(
            render("{{unknown}} {{name", &fields("a")),
            "{{unknown}} {{name"
        );
    }

    #[test]
    fn a_clean_value_is_not_copied_and_a_dirty_one_is_cleaned() {
        assert!(matches!(clean("山田\n太郎"), Cow::Borrowed("山田\n太郎")));
        let dirty = clean("山\u{200b}田\u{202e}\u{0007}");
        assert!(matches!(dirty, Cow::Owned(_)));
        assert_eq!(dirty, "山田");
    }

    #[test]
    fn long_output_is_cut_to_the_limit() {
        let long = "あ".repeat(3000);
        let text = render("{{name}}", &fields(&long));
        assert_eq!(text.chars().count(), MAX_TEXT_CHARS);
        assert!(text.ends_with('…'));
    }
}
