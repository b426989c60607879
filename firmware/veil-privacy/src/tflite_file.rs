//! TensorFlow Lite model files: checked before use, and rewritten in memory so the portable
//! engine runs models whose weights are stored in half precision.
//!
//! Converters store fp16 weights as constant FLOAT16 tensors, each followed by a DEQUANTIZE
//! op that widens it to FLOAT32 at run time. The portable engine has no DEQUANTIZE, so the
//! widening is done once, here, on the file's bytes: each fp16 buffer is widened into a new
//! f32 buffer appended to the file (flatbuffer offsets point forward, so the old tables can
//! refer to it), its tensor is retyped FLOAT32, consumers read it directly, and the now
//! unused DEQUANTIZE ops are turned into RELUs whose outputs nothing reads (the engine drops
//! them). Nothing else in the file moves, so the rewrite is small and checkable.

use std::collections::{BTreeMap, BTreeSet};

use tract_tflite::tflite::{self, BuiltinOperator, TensorType};
use veil_core::Error;

/// A model file that passed the structural check.
pub struct ModelFile {
    pub bytes: Vec<u8>,
    /// Number of fp16 weight tensors widened to f32 (0 when the file needed no rewrite).
    pub widened: usize,
}

fn bad(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::invalid_input(format!("model file {what}: {detail}"))
}

/// Checks that `bytes` is a TensorFlow Lite model (identifier and a verified flatbuffer).
/// `what` names the file in messages.
pub fn check(what: &str, bytes: &[u8]) -> Result<(), Error> {
    parse(what, bytes).map(|_| ())
}

fn parse<'a>(what: &str, bytes: &'a [u8]) -> Result<tflite::Model<'a>, Error> {
    if bytes.len() < 8 || &bytes[4..8] != b"TFL3" {
        return Err(bad(
            what,
            "not a TensorFlow Lite model (no TFL3 identifier); expected a .tflite file",
        ));
    }
    tflite::root_as_model(bytes)
        .map_err(|e| bad(what, format!("corrupt TensorFlow Lite flatbuffer ({e})")))
}

/// Checks that `bytes` is a TensorFlow Lite model and returns it with fp16 weights widened.
/// `what` names the file in messages.
pub fn load_for_portable_engine(what: &str, bytes: Vec<u8>) -> Result<ModelFile, Error> {
    let plan = plan_fold(what, &parse(what, &bytes)?)?;
    let Some(plan) = plan else {
        return Ok(ModelFile { bytes, widened: 0 });
    };
    let widened = plan.buffers.len();
    let out = apply_fold(bytes, plan);
    tflite::root_as_model(&out)
        .map_err(|e| Error::internal(format!("model file {what}: fp16 rewrite failed ({e})")))?;
    Ok(ModelFile {
        bytes: out,
        widened,
    })
}

/// Byte positions to patch, gathered while the file is borrowed.
struct FoldPlan {
    /// Position of each fp16 buffer's `data` field, and the widened data.
    buffers: Vec<(usize, Vec<f32>)>,
    /// Positions of the `type` byte of tensors to retype FLOAT32.
    tensor_types: BTreeSet<usize>,
    /// Positions of i32 tensor indices (op inputs, graph outputs) and the index to put there.
    rewires: Vec<(usize, i32)>,
    /// Positions of opcode fields to turn into RELU: (position, width in bytes).
    opcodes: Vec<(usize, usize)>,
}

fn field(tab: &flatbuffers::Table<'_>, vt: flatbuffers::VOffsetT) -> Option<usize> {
    match tab.vtable().get(vt) {
        0 => None,
        off => Some(tab.loc() + off as usize),
    }
}

fn read_u32(buf: &[u8], at: usize) -> usize {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize
}

/// Positions of the elements of the i32 vector held in field `vt` of `tab`.
fn vector_elements(
    buf: &[u8],
    tab: &flatbuffers::Table<'_>,
    vt: flatbuffers::VOffsetT,
) -> Vec<usize> {
    let Some(at) = field(tab, vt) else {
        return Vec::new();
    };
    let vec = at + read_u32(buf, at);
    let len = read_u32(buf, vec);
    (0..len).map(|i| vec + 4 + 4 * i).collect()
}

fn code_of(c: &tflite::OperatorCode<'_>) -> i32 {
    (c.deprecated_builtin_code() as i32).max(c.builtin_code().0)
}

fn plan_fold(what: &str, model: &tflite::Model<'_>) -> Result<Option<FoldPlan>, Error> {
    let buf = model._tab.buf();
    let codes = model
        .operator_codes()
        .ok_or_else(|| bad(what, "has no operator codes"))?;
    let dequantize: BTreeSet<u32> = (0..codes.len())
        .filter(|&i| code_of(&codes.get(i)) == BuiltinOperator::DEQUANTIZE.0)
        .map(|i| i as u32)
        .collect();
    if dequantize.is_empty() {
        return Ok(None);
    }
    let buffers = model.buffers().ok_or_else(|| bad(what, "has no buffers"))?;
    let mut plan = FoldPlan {
        buffers: Vec::new(),
        tensor_types: BTreeSet::new(),
        rewires: Vec::new(),
        opcodes: Vec::new(),
    };
    for i in &dequantize {
        let c = codes.get(*i as usize);
        if let Some(p) = field(&c._tab, tflite::OperatorCode::VT_DEPRECATED_BUILTIN_CODE) {
            plan.opcodes.push((p, 1));
        }
        if let Some(p) = field(&c._tab, tflite::OperatorCode::VT_BUILTIN_CODE) {
            plan.opcodes.push((p, 4));
        }
    }
    let mut widened_buffers = BTreeSet::new();
    for graph in model.subgraphs().into_iter().flatten() {
        let tensors = graph
            .tensors()
            .ok_or_else(|| bad(what, "subgraph without tensors"))?;
        let ops = graph.operators().into_iter().flatten();
        // Output tensor of each DEQUANTIZE -> its constant input.
        let mut replace: BTreeMap<i32, i32> = BTreeMap::new();
        for op in ops
            .clone()
            .filter(|o| dequantize.contains(&o.opcode_index()))
        {
            let (Some(ins), Some(outs)) = (op.inputs(), op.outputs()) else {
                return Err(bad(what, "DEQUANTIZE without input or output"));
            };
            if ins.len() != 1 || outs.len() != 1 {
                return Err(bad(what, "DEQUANTIZE with more than one input or output"));
            }
            let (src, dst) = (ins.get(0), outs.get(0));
            let t = tensors.get(src as usize);
            let buffer_index = t.buffer() as usize;
            let data = (buffer_index != 0 && buffer_index < buffers.len())
                .then(|| buffers.get(buffer_index).data())
                .flatten();
            let (true, Some(data)) = (t.type_() == TensorType::FLOAT16, data) else {
                return Err(bad(
                    what,
                    format!(
                        "DEQUANTIZE of tensor '{}' is not an fp16 constant; the portable engine \
                         cannot run it (use the tflite backend)",
                        t.name().unwrap_or("?")
                    ),
                ));
            };
            let numel: usize = t
                .shape()
                .map(|s| s.iter().map(|d| d.max(0) as usize).product())
                .unwrap_or(0);
            if data.len() != numel * 2 {
                return Err(bad(
                    what,
                    format!(
                        "fp16 tensor '{}' holds {} bytes for {numel} values",
                        t.name().unwrap_or("?"),
                        data.len()
                    ),
                ));
            }
            if widened_buffers.insert(buffer_index) {
                let values = data
                    .bytes()
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect();
                let b = buffers.get(buffer_index);
                let at = field(&b._tab, tflite::Buffer::VT_DATA).expect("data is present");
                plan.buffers.push((at, values));
            }
            let type_at = field(&t._tab, tflite::Tensor::VT_TYPE_).expect("FLOAT16 is stored");
            plan.tensor_types.insert(type_at);
            replace.insert(dst, src);
        }
        for op in ops.filter(|o| !dequantize.contains(&o.opcode_index())) {
            for at in vector_elements(buf, &op._tab, tflite::Operator::VT_INPUTS) {
                let index = i32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
                if let Some(&src) = replace.get(&index) {
                    plan.rewires.push((at, src));
                }
            }
        }
        for at in vector_elements(buf, &graph._tab, tflite::SubGraph::VT_OUTPUTS) {
            let index = i32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
            if let Some(&src) = replace.get(&index) {
                plan.rewires.push((at, src));
            }
        }
    }
    Ok(Some(plan))
}

fn apply_fold(mut out: Vec<u8>, plan: FoldPlan) -> Vec<u8> {
    for (field_at, values) in plan.buffers {
        // Vector = u32 length, then the bytes; TFLite asks for 16-byte aligned buffer data.
        while !(out.len() + 4).is_multiple_of(16) {
            out.push(0);
        }
        let vec_at = out.len();
        out.extend_from_slice(&((values.len() * 4) as u32).to_le_bytes());
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let rel = (vec_at - field_at) as u32;
        out[field_at..field_at + 4].copy_from_slice(&rel.to_le_bytes());
    }
    for at in plan.tensor_types {
        out[at] = TensorType::FLOAT32.0 as u8;
    }
    for (at, index) in plan.rewires {
        out[at..at + 4].copy_from_slice(&index.to_le_bytes());
    }
    let relu = BuiltinOperator::RELU.0;
    for (at, width) in plan.opcodes {
        match width {
            1 => out[at] = relu as u8,
            _ => out[at..at + 4].copy_from_slice(&relu.to_le_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_model_is_refused_with_its_name() {
        let e = load_for_portable_engine("faces.tflite", b"<html>404</html>".to_vec())
            .err()
            .unwrap();
        assert!(e.message().contains("faces.tflite"), "{e}");
        assert!(e.message().contains("not a TensorFlow Lite model"), "{e}");
        let mut truncated = vec![0u8; 64];
        truncated[4..8].copy_from_slice(b"TFL3");
        truncated[0] = 200;
        let e = load_for_portable_engine("x.tflite", truncated)
            .err()
            .unwrap();
        assert!(e.message().contains("corrupt"), "{e}");
    }
}
