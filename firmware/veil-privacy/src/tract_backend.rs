//! The portable inference backend: tract, pure Rust, on every board and in CI.

use std::path::Path;
use std::sync::Arc;

use tract_tflite::prelude::*;
use veil_core::Error;

use crate::face::{Inference, Variant};
use crate::tflite_file;

pub struct TractInference {
    plan: Arc<TypedRunnableModel>,
    side: usize,
    /// Output positions of the regressors and the scores.
    outputs: (usize, usize),
}

impl TractInference {
    /// Loads a BlazeFace model file; every problem names the file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let what = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            Error::invalid_input(format!(
                "model file {what}: cannot read it ({e}); run scripts/fetch-models or set the \
                 camera's model path"
            ))
        })?;
        Self::from_bytes(&what, bytes)
    }

    pub fn from_bytes(what: &str, bytes: Vec<u8>) -> Result<Self, Error> {
        let file = tflite_file::load_for_portable_engine(what, bytes)?;
        let invalid = |e: TractError| {
            Error::invalid_input(format!(
                "model file {what}: the portable engine cannot run it: {e:#}"
            ))
        };
        let model = tract_tflite::tflite()
            .model_for_read(&mut file.bytes.as_slice())
            .map_err(invalid)?;
        let input = model.input_fact(0).map_err(invalid)?.clone();
        let shape: Vec<usize> = input
            .shape
            .as_concrete()
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let [1, side, w, 3] = shape[..] else {
            return Err(Error::invalid_input(format!(
                "model file {what}: input shape {shape:?} is not [1, side, side, 3]"
            )));
        };
        let mut outputs = (usize::MAX, usize::MAX);
        let mut boxes = 0;
        for i in 0..model.outputs.len() {
            let fact = model.output_fact(i).map_err(invalid)?;
            match fact.shape.as_concrete() {
                Some(&[1, n, 16]) => (outputs.0, boxes) = (i, n),
                Some(&[1, _, 1]) => outputs.1 = i,
                other => {
                    return Err(Error::invalid_input(format!(
                        "model file {what}: output {i} has shape {other:?}, expected [1, n, 16] \
                         boxes and [1, n, 1] scores"
                    )));
                }
            }
        }
        if side != w || outputs.0 == usize::MAX || outputs.1 == usize::MAX {
            return Err(Error::invalid_input(format!(
                "model file {what}: expected a square input and box and score outputs"
            )));
        }
        Variant::from_shapes(side, boxes)
            .map_err(|e| Error::invalid_input(format!("model file {what}: {e}")))?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(invalid)?;
        Ok(TractInference {
            plan,
            side,
            outputs,
        })
    }
}

impl Inference for TractInference {
    fn input_side(&self) -> usize {
        self.side
    }

    fn run(&mut self, input: &[f32]) -> Result<(Vec<f32>, Vec<f32>), Error> {
        let s = self.side;
        let tensor = Tensor::from_shape(&[1, s, s, 3], input)
            .map_err(|e| Error::internal(format!("face model input: {e}")))?;
        let out = self
            .plan
            .run(tvec!(tensor.into()))
            .map_err(|e| Error::internal(format!("face model run: {e:#}")))?;
        let flat = |i: usize| -> Result<Vec<f32>, Error> {
            let view = out[i]
                .to_plain_array_view::<f32>()
                .map_err(|e| Error::internal(format!("face model output: {e}")))?;
            Ok(view.iter().copied().collect())
        };
        Ok((flat(self.outputs.0)?, flat(self.outputs.1)?))
    }
}
