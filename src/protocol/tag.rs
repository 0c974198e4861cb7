//! Zero-sized `taskType` markers: each serializes as its literal and refuses any
//! other value when deserialized, so a typed task can only hold its own type.

macro_rules! task_tag {
    ($(#[$doc:meta] $name:ident = $lit:literal;)*) => {$(
        #[$doc]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name;

        impl $name {
            /// The wire name of the task type.
            pub const NAME: &'static str = $lit;
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($lit)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                if s == $lit {
                    Ok($name)
                } else {
                    Err(serde::de::Error::invalid_value(serde::de::Unexpected::Str(&s), &$lit))
                }
            }
        }
    )*};
}

task_tag! {
    /// `"authentication"`
    Authentication = "authentication";
    /// `"ping"`
    Ping = "ping";
    /// `"imageInference"`
    ImageInference = "imageInference";
    /// `"imageUpload"`
    ImageUpload = "imageUpload";
    /// `"mediaStorage"`
    MediaStorage = "mediaStorage";
    /// `"getResponse"`
    GetResponse = "getResponse";
}
