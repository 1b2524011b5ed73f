//! A seeded, stratified train/held-out split: every label keeps its share in both parts.

use std::collections::BTreeMap;

use super::rng::Rng;

/// Returns (train, held-out) indices into `labels`. A label with fewer than three
/// examples stays wholly in training: one held-out example says nothing and costs the
/// head its only example.
pub(crate) fn stratified(labels: &[u32], holdout: f32, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut by_label: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_label.entry(l).or_default().push(i);
    }
    let mut rng = super::rng::Rng::new(seed.wrapping_add(1));
    let mut train = Vec::new();
    let mut held = Vec::new();
    for (_, mut idx) in by_label {
        shuffle(&mut rng, &mut idx);
        let n = idx.len();
        let take = if n < 3 || holdout <= 0.0 {
            0
        } else {
            ((n as f32 * holdout).round() as usize).clamp(1, n - 1)
        };
        held.extend_from_slice(&idx[..take]);
        train.extend_from_slice(&idx[take..]);
    }
    train.sort_unstable();
    held.sort_unstable();
    (train, held)
}

fn shuffle(rng: &mut Rng, idx: &mut [usize]) {
    rng.shuffle(idx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_each_labels_share_and_is_seeded() {
        let labels: Vec<u32> = (0..100)
            .map(|i| if i < 80 { 0 } else { 1 })
            .chain([2, 2])
            .collect();
        let (train, held) = stratified(&labels, 0.1, 1);
        assert_eq!(train.len() + held.len(), labels.len());
        assert_eq!(held.iter().filter(|&&i| labels[i] == 0).count(), 8);
        assert_eq!(held.iter().filter(|&&i| labels[i] == 1).count(), 2);
        assert_eq!(held.iter().filter(|&&i| labels[i] == 2).count(), 0);
        assert_eq!(stratified(&labels, 0.1, 1), (train.clone(), held.clone()));
        assert_ne!(stratified(&labels, 0.1, 2).1, held);
        assert!(stratified(&labels, 0.0, 1).1.is_empty());
    }
}
