//! What a task costs, from the model pages: the one price table of the project
//! (the CLI's estimates and budgets, and the emulator's billing, read it here).

use super::kontext;

/// The price of one image of `model` in USD, when this table knows it. Unknown
/// models are `None`: callers say "unknown" rather than guess.
pub fn price_per_image(model: &str) -> Option<f64> {
    match model {
        kontext::MODEL => Some(kontext::PRICE_PER_IMAGE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kontext_pro_is_four_cents_and_unknown_models_are_unknown() {
        assert_eq!(price_per_image("bfl:3@1"), Some(0.04));
        assert_eq!(price_per_image("runware:100@1"), None);
    }
}
