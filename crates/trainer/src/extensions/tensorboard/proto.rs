//! The few protocol-buffer messages of TensorBoard's event files, encoded by
//! hand (`tensorflow/core/util/event.proto`, `framework/summary.proto`, the
//! hparams plugin's `plugin_data.proto`), and a reader of them for checks.

use anyhow::{bail, Context, Result};

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const BYTES: u64 = 2;
const FIXED32: u64 = 5;

/// A message under construction.
#[derive(Debug, Default, Clone)]
pub struct Message(Vec<u8>);

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Message {
    fn key(&mut self, field: u64, wire: u64) {
        varint(&mut self.0, field << 3 | wire);
    }

    pub fn varint(mut self, field: u64, v: u64) -> Self {
        self.key(field, VARINT);
        varint(&mut self.0, v);
        self
    }

    pub fn double(mut self, field: u64, v: f64) -> Self {
        self.key(field, FIXED64);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn float(mut self, field: u64, v: f32) -> Self {
        self.key(field, FIXED32);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bytes(mut self, field: u64, v: &[u8]) -> Self {
        self.key(field, BYTES);
        varint(&mut self.0, v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    pub fn string(self, field: u64, v: &str) -> Self {
        self.bytes(field, v.as_bytes())
    }

    pub fn message(self, field: u64, m: Message) -> Self {
        self.bytes(field, &m.0)
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// The event that opens every file.
pub fn file_version_event(wall_time: f64) -> Vec<u8> {
    Message::default()
        .double(1, wall_time)
        .varint(2, 0)
        .string(3, "brain.Event:2")
        .into_bytes()
}

/// An event holding one summary value.
pub fn summary_event(wall_time: f64, step: u64, value: Message) -> Vec<u8> {
    Message::default()
        .double(1, wall_time)
        .varint(2, step)
        .message(5, Message::default().message(1, value))
        .into_bytes()
}

/// `Summary.Value` of a scalar.
pub fn scalar(tag: &str, value: f32) -> Message {
    Message::default().string(1, tag).float(2, value)
}

/// `Summary.Value` of a PNG image (`channels` 1 gray, 3 RGB).
pub fn image(tag: &str, width: u32, height: u32, channels: u32, png: &[u8]) -> Message {
    let image = Message::default()
        .varint(1, u64::from(height))
        .varint(2, u64::from(width))
        .varint(3, u64::from(channels))
        .bytes(4, png);
    Message::default().string(1, tag).message(4, image)
}

fn plugin_metadata(plugin: &str, content: &[u8]) -> Message {
    let data = Message::default().string(1, plugin).bytes(2, content);
    Message::default().message(1, data)
}

/// `Summary.Value` of markdown text (the text plugin: a string tensor).
pub fn text(tag: &str, markdown: &str) -> Message {
    let shape = Message::default().message(2, Message::default().varint(1, 1));
    let tensor = Message::default()
        .varint(1, 7) // DT_STRING
        .message(2, shape)
        .bytes(8, markdown.as_bytes());
    Message::default()
        .string(1, tag)
        .message(9, plugin_metadata("text", &[]))
        .message(8, tensor)
}

/// A hyper-parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum HParam {
    Number(f64),
    Text(String),
    Bool(bool),
}

/// The hparams plugin's tags.
pub const HPARAMS_EXPERIMENT: &str = "_hparams_/experiment";
pub const HPARAMS_SESSION_START: &str = "_hparams_/session_start_info";
pub const HPARAMS_SESSION_END: &str = "_hparams_/session_end_info";

fn hparams_value(tag: &str, data: Message) -> Message {
    let content = Message::default()
        .varint(1, 0)
        .message(data_field(tag), data);
    Message::default()
        .string(1, tag)
        .message(9, plugin_metadata("hparams", &content.into_bytes()))
}

fn data_field(tag: &str) -> u64 {
    match tag {
        HPARAMS_EXPERIMENT => 2,
        HPARAMS_SESSION_START => 3,
        _ => 4,
    }
}

/// The experiment's description: which hyper-parameters and metrics exist.
pub fn hparams_experiment(hparams: &[(String, HParam)], metrics: &[String]) -> Message {
    let mut experiment = Message::default();
    for (name, value) in hparams {
        let kind = match value {
            HParam::Text(_) => 1,
            HParam::Bool(_) => 2,
            HParam::Number(_) => 3,
        };
        experiment = experiment.message(4, Message::default().string(1, name).varint(4, kind));
    }
    for metric in metrics {
        let name = Message::default().string(1, "").string(2, metric);
        experiment = experiment.message(5, Message::default().message(1, name));
    }
    hparams_value(HPARAMS_EXPERIMENT, experiment)
}

/// This run's hyper-parameter values.
pub fn hparams_session_start(hparams: &[(String, HParam)], start_time: f64) -> Message {
    let mut start = Message::default();
    for (name, value) in hparams {
        let value = match value {
            HParam::Number(v) => Message::default().double(2, *v),
            HParam::Text(s) => Message::default().string(3, s),
            HParam::Bool(b) => Message::default().varint(4, u64::from(*b)),
        };
        start = start.message(1, Message::default().string(1, name).message(2, value));
    }
    hparams_value(HPARAMS_SESSION_START, start.double(5, start_time))
}

/// The run has ended (status success).
pub fn hparams_session_end(end_time: f64) -> Message {
    hparams_value(
        HPARAMS_SESSION_END,
        Message::default().varint(1, 1).double(2, end_time),
    )
}

/// One field of a decoded message.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).context("a varint runs past the message")?;
        *at += 1;
        v |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    bail!("a varint is longer than 10 bytes")
}

/// Every `(field number, value)` of a message, in order.
fn fields(bytes: &[u8]) -> Result<Vec<(u64, Field<'_>)>> {
    let mut out = vec![];
    let mut at = 0;
    while at < bytes.len() {
        let key = read_varint(bytes, &mut at)?;
        let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
            let end = at.checked_add(n).filter(|&e| e <= bytes.len());
            let end = end.context("a field runs past the message")?;
            let slice = &bytes[*at..end];
            *at = end;
            Ok(slice)
        };
        let field = match key & 7 {
            VARINT => Field::Varint(read_varint(bytes, &mut at)?),
            FIXED64 => Field::Fixed64(u64::from_le_bytes(take(&mut at, 8)?.try_into()?)),
            BYTES => {
                let n = usize::try_from(read_varint(bytes, &mut at)?)?;
                Field::Bytes(take(&mut at, n)?)
            }
            FIXED32 => Field::Fixed32(u32::from_le_bytes(take(&mut at, 4)?.try_into()?)),
            wire => bail!("wire type {wire} is not used by event files"),
        };
        out.push((key >> 3, field));
    }
    Ok(out)
}

fn bytes_of<'a>(fields: &[(u64, Field<'a>)], number: u64) -> Option<&'a [u8]> {
    fields.iter().find_map(|(n, f)| match f {
        Field::Bytes(b) if *n == number => Some(*b),
        _ => None,
    })
}

fn varint_of(fields: &[(u64, Field<'_>)], number: u64) -> Option<u64> {
    fields.iter().find_map(|(n, f)| match f {
        Field::Varint(v) if *n == number => Some(*v),
        _ => None,
    })
}

/// What one summary value holds.
#[derive(Debug, Clone, PartialEq)]
pub enum SummaryKind {
    Scalar(f32),
    /// A PNG image.
    Image {
        width: u32,
        height: u32,
        channels: u32,
        png: Vec<u8>,
    },
    /// Markdown text (the text plugin).
    Text(String),
    /// Another plugin's data (the hparams plugin's, say): its name and content.
    Plugin {
        name: String,
        content: Vec<u8>,
    },
}

/// One summary value of an event.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryValue {
    pub tag: String,
    pub kind: SummaryKind,
}

/// One event of a file, as [`super::read_events`] decodes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub wall_time: f64,
    pub step: u64,
    /// Set on the file's first event.
    pub file_version: Option<String>,
    pub values: Vec<SummaryValue>,
}

fn text_of(bytes: &[u8]) -> Result<String> {
    Ok(String::from_utf8(bytes.to_vec())?)
}

/// Decodes one event.
pub fn decode_event(bytes: &[u8]) -> Result<Event> {
    let fields = fields(bytes)?;
    let wall_time = fields
        .iter()
        .find_map(|(n, f)| match f {
            Field::Fixed64(v) if *n == 1 => Some(f64::from_bits(*v)),
            _ => None,
        })
        .unwrap_or_default();
    let mut values = vec![];
    if let Some(summary) = bytes_of(&fields, 5) {
        for (n, f) in self::fields(summary)? {
            let (1, Field::Bytes(value)) = (n, f) else {
                continue;
            };
            let value = self::fields(value)?;
            let tag = text_of(bytes_of(&value, 1).unwrap_or_default())?;
            let scalar = value.iter().find_map(|(n, f)| match f {
                Field::Fixed32(v) if *n == 2 => Some(f32::from_bits(*v)),
                _ => None,
            });
            let plugin = match bytes_of(&value, 9) {
                Some(meta) => match bytes_of(&self::fields(meta)?, 1) {
                    Some(data) => {
                        let data = self::fields(data)?;
                        Some((
                            text_of(bytes_of(&data, 1).unwrap_or_default())?,
                            bytes_of(&data, 2).unwrap_or_default().to_vec(),
                        ))
                    }
                    None => None,
                },
                None => None,
            };
            let kind = if let Some(v) = scalar {
                SummaryKind::Scalar(v)
            } else if let Some(image) = bytes_of(&value, 4) {
                let image = self::fields(image)?;
                SummaryKind::Image {
                    height: varint_of(&image, 1).unwrap_or_default() as u32,
                    width: varint_of(&image, 2).unwrap_or_default() as u32,
                    channels: varint_of(&image, 3).unwrap_or_default() as u32,
                    png: bytes_of(&image, 4).unwrap_or_default().to_vec(),
                }
            } else if let Some((name, content)) = plugin {
                if name == "text" {
                    let tensor = self::fields(bytes_of(&value, 8).unwrap_or_default())?;
                    SummaryKind::Text(text_of(bytes_of(&tensor, 8).unwrap_or_default())?)
                } else {
                    SummaryKind::Plugin { name, content }
                }
            } else {
                bail!("summary value `{tag}` holds nothing kusari writes");
            };
            values.push(SummaryValue { tag, kind });
        }
    }
    Ok(Event {
        wall_time,
        step: varint_of(&fields, 2).unwrap_or_default(),
        file_version: bytes_of(&fields, 3).map(text_of).transpose()?,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_value_decodes_to_what_was_encoded() -> Result<()> {
        let version = decode_event(&file_version_event(12.5))?;
        assert_eq!(version.file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!(version.wall_time, 12.5);
        let event = decode_event(&summary_event(1.0, 300, scalar("dis/loss", 0.25)))?;
        assert_eq!(event.step, 300);
        assert_eq!(
            event.values,
            vec![SummaryValue {
                tag: "dis/loss".into(),
                kind: SummaryKind::Scalar(0.25)
            }]
        );
        let png = vec![1u8, 2, 3];
        let event = decode_event(&summary_event(1.0, 7, image("g", 30, 20, 1, &png)))?;
        assert_eq!(
            event.values[0].kind,
            SummaryKind::Image {
                width: 30,
                height: 20,
                channels: 1,
                png
            }
        );
        let event = decode_event(&summary_event(1.0, 0, text("config", "# hi")))?;
        assert_eq!(event.values[0].kind, SummaryKind::Text("# hi".into()));
        let hp = [("lr".to_string(), HParam::Number(1e-3))];
        let event = decode_event(&summary_event(1.0, 0, hparams_session_start(&hp, 5.0)))?;
        assert!(
            matches!(&event.values[0].kind, SummaryKind::Plugin { name, .. } if name == "hparams")
        );
        assert_eq!(event.values[0].tag, HPARAMS_SESSION_START);
        assert!(decode_event(&[0x0A, 0x05, 1]).is_err());
        Ok(())
    }
}
