//! Checksums that tell a real identifier from a random digit string.

/// Luhn (ISO/IEC 7812) for payment card numbers, 13–19 digits.
pub fn luhn(digits: &str) -> bool {
    if !(13..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// GB 11643-1999 resident identity number: 17 digits and an ISO 7064 MOD 11-2 check
/// character (0–9 or X), with a plausible birth date.
pub fn cn_resident_id(id: &str) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let b = id.as_bytes();
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = b[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    if b[17].to_ascii_uppercase() != CHECK[(sum % 11) as usize] {
        return false;
    }
    let num = |r: std::ops::Range<usize>| id[r].parse::<u32>().unwrap_or(0);
    let (year, month, day) = (num(6..10), num(10..12), num(12..14));
    (1900..=2100).contains(&year) && (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// Chinese mobile numbers: 11 digits starting 13–19, optionally after +86/86.
pub fn cn_mobile(s: &str) -> bool {
    let s = s.strip_prefix('+').unwrap_or(s);
    let s = if s.len() == 13 {
        s.strip_prefix("86").unwrap_or(s)
    } else {
        s
    };
    s.len() == 11 && s.bytes().all(|b| b.is_ascii_digit())
}

/// ISO 13616 IBAN: country, check digits, BBAN; mod 97 of the rearranged number is 1.
pub fn iban(s: &str) -> bool {
    if !(15..=34).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (head, tail) = s.split_at(4);
    let mut rem: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}
