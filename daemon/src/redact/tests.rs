use proptest::prelude::*;

use super::checks::*;
use super::*;

fn r() -> Redactor {
    Redactor::new(&[]).unwrap()
}

fn luhn_complete(body: &[u8]) -> String {
    for d in 0..10u8 {
        let s: String = body
            .iter()
            .chain(std::iter::once(&d))
            .map(|x| (b'0' + x) as char)
            .collect();
        if luhn(&s) {
            return s;
        }
    }
    unreachable!("one check digit always completes a Luhn number")
}

fn cn_id_complete(body: &str) -> String {
    for c in "0123456789X".chars() {
        let s = format!("{body}{c}");
        if cn_resident_id(&s) {
            return s;
        }
    }
    unreachable!("one check character always completes an ID")
}

#[test]
fn known_examples() {
    let r = r();
    assert_eq!(
        r.redact("card 4111 1111 1111 1111 please"),
        "card [CARD] please"
    );
    assert_eq!(
        r.redact("card 4111-1111-1111-1112 please"),
        "card 4111-1111-1111-1112 please"
    );
    assert_eq!(
        r.redact("我的身份证号是11010519491231002X。"),
        "我的身份证号是[CN_ID]。"
    );
    assert_eq!(r.redact("手机13812345678，谢谢"), "手机[PHONE]，谢谢");
    assert_eq!(r.redact("call +44 20 7946 0958"), "call [PHONE]");
    assert_eq!(
        r.redact("mail jane.doe@example.co.uk now"),
        "mail [EMAIL] now"
    );
    assert_eq!(
        r.redact("IBAN GB82 WEST 1234 5698 7654 32."),
        "IBAN [IBAN]."
    );
    assert_eq!(
        r.redact("IBAN GB83 WEST 1234 5698 7654 32."),
        "IBAN GB83 WEST 1234 5698 7654 32."
    );
    assert_eq!(r.redact("order 12345 for $45.99"), "order 12345 for $45.99");
}

#[test]
fn custom_patterns_mask_with_their_name_and_bad_ones_are_named() {
    let r = Redactor::new(&[CustomPattern {
        name: "MRN".into(),
        regex: r"MRN-\d{6}".into(),
    }])
    .unwrap();
    assert_eq!(r.redact("patient MRN-123456 seen"), "patient [MRN] seen");
    let err = Redactor::new(&[CustomPattern {
        name: "BAD".into(),
        regex: "(".into(),
    }])
    .err()
    .unwrap()
    .to_string();
    assert!(err.starts_with("redact.patterns[0] (BAD)"), "{err}");
    assert!(
        Redactor::new(&[CustomPattern {
            name: "lower".into(),
            regex: "x".into()
        }])
        .is_err()
    );
}

proptest! {
    #[test]
    fn valid_card_numbers_are_always_masked(body in proptest::collection::vec(0u8..10, 12..18),
                                            pre in "[a-z ]{0,12}", post in "[a-z ]{0,12}") {
        let mut body = body;
        body[0] = body[0].max(1);
        let card = luhn_complete(&body);
        let text = format!("{pre} {card} {post}");
        let out = r().redact(&text);
        prop_assert!(!out.contains(&card), "{} -> {}", text, out);
        prop_assert!(out.contains("[CARD]") || out.contains("[CN_ID]") || out.contains("[PHONE]"));
    }

    #[test]
    fn digit_strings_failing_luhn_are_left_alone(body in proptest::collection::vec(0u8..10, 15..16)) {
        let mut body = body;
        body[0] = 4;
        let valid = luhn_complete(&body);
        let last = valid.as_bytes()[valid.len() - 1] - b'0';
        let invalid = format!("{}{}", &valid[..valid.len() - 1], (last + 1) % 10);
        let text = format!("ref {invalid} end");
        prop_assert_eq!(r().redact(&text), text);
    }

    #[test]
    fn valid_resident_ids_are_always_masked(region in 110000u32..660000, y in 1930u32..2020, m in 1u32..13,
                                            d in 1u32..29, seq in 0u32..1000) {
        let id = cn_id_complete(&format!("{region}{y}{m:02}{d:02}{seq:03}"));
        let text = format!("身份证{id}谢谢");
        prop_assert_eq!(r().redact(&text), "身份证[CN_ID]谢谢");
    }

    #[test]
    fn resident_ids_with_a_wrong_check_character_are_not_ids(region in 110000u32..660000, y in 1930u32..2020,
                                                              m in 1u32..13, d in 1u32..29, seq in 0u32..1000) {
        let id = cn_id_complete(&format!("{region}{y}{m:02}{d:02}{seq:03}"));
        let wrong = if id.ends_with('1') { "2" } else { "1" };
        let bad = format!("{}{wrong}", &id[..17]);
        let out = r().redact(&format!("编号{}", bad));
        prop_assert!(!out.contains("[CN_ID]"), "{}", out);
    }

    #[test]
    fn valid_ibans_are_masked(bban in "[0-9]{18}") {
        // Compute DE check digits for the BBAN.
        let rearranged = format!("{bban}131400");
        let rem = rearranged.bytes().fold(0u64, |r, b| (r * 10 + u64::from(b - b'0')) % 97);
        let iban = format!("DE{:02}{bban}", 98 - rem);
        prop_assert!(super::checks::iban(&iban));
        prop_assert_eq!(r().redact(&format!("to {iban} now")), "to [IBAN] now");
    }

    #[test]
    fn mobiles_and_emails_are_masked(n in 0u64..1_000_000_000, user in "[a-z]{1,10}", dom in "[a-z]{2,10}") {
        let phone = format!("13{:09}", n);
        let out = r().redact(&format!("电话{phone}，邮箱{user}@{dom}.com"));
        prop_assert_eq!(out, "电话[PHONE]，邮箱[EMAIL]");
    }
}
