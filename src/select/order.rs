//! The order a run takes its cases in when earlier times are known (`--durations`): image by
//! image as always (each image is pulled once, and pruned after its last case), the heaviest
//! image first, and in each image the slowest case first. The cases that start last are then
//! the short ones, so threads do not sit idle while one long case ends the run.

use std::collections::HashMap;

use crate::partition::durations::Durations;
use crate::select::plan::Case;

/// Sorts `cases` (already grouped image by image) slowest first, keeping each image's cases
/// together. Ties keep their order.
pub fn slowest_first(cases: &mut [Case], durations: &Durations) {
    let mut image_ms: HashMap<(String, String), u64> = HashMap::new();
    for c in cases.iter() {
        *image_ms
            .entry((c.runtime.to_string(), c.image.clone()))
            .or_default() += durations.weight(&c.name);
    }
    let key = |c: &Case| {
        let image = image_ms
            .get(&(c.runtime.to_string(), c.image.clone()))
            .copied()
            .unwrap_or(0);
        (
            std::cmp::Reverse(image),
            c.runtime,
            c.image.clone(),
            std::cmp::Reverse(durations.weight(&c.name)),
        )
    };
    cases.sort_by_cached_key(key);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn case(model: &str, image: &str) -> Case {
        Case::for_test(model, image)
    }

    #[test]
    fn heaviest_image_first_slowest_case_first_images_kept_together() {
        let times = [("a1", 1), ("a2", 50), ("b1", 30), ("b2", 40), ("b3", 5)];
        let d = Durations::from_times(
            PathBuf::from("d.xml"),
            1,
            times.map(|(m, s)| (format!("docker::{m}"), s * 1000)),
        );
        let mut cases = vec![
            case("a1", "img:a"),
            case("a2", "img:a"),
            case("b1", "img:b"),
            case("b2", "img:b"),
            case("b3", "img:b"),
        ];
        slowest_first(&mut cases, &d);
        let order: Vec<&str> = cases.iter().map(|c| c.model.as_str()).collect();
        // img:b (75 s) before img:a (51 s).
        assert_eq!(order, ["b2", "b1", "b3", "a2", "a1"]);
    }
}
