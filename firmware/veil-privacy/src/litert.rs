//! The accelerated inference backend: the LiteRT (TensorFlow Lite) C runtime, loaded at run
//! time from the library the board names, with the accelerator the board names.
//!
//! Loaded with `dlopen` rather than linked: the same firmware runs on boards whose BSP ships
//! a runtime built for its NPU, and on boards with none (the camera then refuses the backend
//! with a clear message, and its frames stay blanked, rather than the daemon failing to start).
//! The C API is LiteRT's CompiledModel API (`litert/c/`), as exported by `libLiteRt.so`.

#![allow(unsafe_code)]

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::ptr;

use libloading::{Library, Symbol};
use veil_core::Error;

use crate::face::{Inference, Variant};

/// Which hardware LiteRT should compile the model for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    /// CPU, through LiteRT's XNNPACK kernels.
    Cpu,
    /// GPU (OpenCL / WebGPU where the runtime has it).
    Gpu,
    /// The board's NPU, through the vendor dispatch library.
    Npu,
}

impl Accelerator {
    fn bits(self) -> i32 {
        // kLiteRtHwAccelerator{Cpu,Gpu,Npu}
        match self {
            Accelerator::Cpu => 1,
            Accelerator::Gpu => 2,
            Accelerator::Npu => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LiteRtOptions {
    /// The runtime library, e.g. `/usr/lib/libLiteRt.so`.
    pub library: PathBuf,
    pub accelerator: Accelerator,
}

type Status = i32;
type Handle = *mut c_void;

/// Large enough for `LiteRtRankedTensorType` in every published layout (72-76 bytes); it is
/// only passed back to the runtime, never read here.
#[repr(C, align(16))]
struct RankedTensorType([u8; 256]);

struct Api {
    // Kept alive: the function pointers below point into it.
    _lib: Library,
    destroy_environment: unsafe extern "C" fn(Handle),
    destroy_model: unsafe extern "C" fn(Handle),
    destroy_compiled: unsafe extern "C" fn(Handle),
    destroy_buffer: unsafe extern "C" fn(Handle),
    lock: unsafe extern "C" fn(Handle, *mut *mut c_void, i32) -> Status,
    unlock: unsafe extern "C" fn(Handle) -> Status,
    packed_size: unsafe extern "C" fn(Handle, *mut usize) -> Status,
    run: unsafe extern "C" fn(Handle, usize, usize, *mut Handle, usize, *mut Handle) -> Status,
}

/// One model compiled by LiteRT, with its input and output buffers.
pub struct LiteRt {
    api: Api,
    env: Handle,
    model: Handle,
    compiled: Handle,
    inputs: Vec<Handle>,
    outputs: Vec<Handle>,
    /// Output positions of the regressors and the scores.
    order: (usize, usize),
    side: usize,
    /// The model bytes: LiteRT reads them in place for the model's lifetime.
    _bytes: Vec<u8>,
}

// The handles are used from one thread at a time (the detector's), never shared.
unsafe impl Send for LiteRt {}

fn check(what: &str, step: &str, status: Status) -> Result<(), Error> {
    if status == 0 {
        Ok(())
    } else {
        Err(Error::internal(format!(
            "LiteRT runtime {what}: {step} failed (status {status})"
        )))
    }
}

impl LiteRt {
    /// Loads the runtime library and compiles the model at `path` for the accelerator.
    pub fn load(path: &Path, options: &LiteRtOptions) -> Result<LiteRt, Error> {
        let what = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            Error::invalid_input(format!(
                "model file {what}: cannot read it ({e}); run scripts/fetch-models or set the \
                 model directory"
            ))
        })?;
        // The same structural check as the portable engine, so a bad file gets the same
        // message whatever the backend; LiteRT itself runs fp16 weights natively.
        crate::tflite_file::check(&what, &bytes)?;
        let lib_name = options.library.display().to_string();
        // SAFETY: loading a shared library runs its initialisers; the library is the LiteRT
        // runtime the board profile names, trusted like the firmware itself.
        let lib = unsafe { Library::new(&options.library) }.map_err(|e| {
            Error::new(
                veil_core::ErrorKind::NotConfigured,
                format!(
                    "LiteRT runtime {lib_name} cannot be loaded ({e}); install it or use the \
                     tract backend"
                ),
            )
        })?;
        macro_rules! sym {
            ($name:literal) => {{
                // SAFETY: the symbol's type is the C prototype from litert/c/*.h.
                let s: Symbol<_> =
                    unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(|e| {
                        Error::invalid_input(format!(
                            "LiteRT runtime {lib_name} lacks {} ({e}); it is not a LiteRT 2 C \
                             runtime",
                            $name
                        ))
                    })?;
                *s
            }};
        }
        let create_environment: unsafe extern "C" fn(i32, *const c_void, *mut Handle) -> Status =
            sym!("LiteRtCreateEnvironment");
        let create_model: unsafe extern "C" fn(
            Handle,
            *const c_void,
            usize,
            *mut Handle,
        ) -> Status = sym!("LiteRtCreateModelFromBuffer");
        let create_options: unsafe extern "C" fn(*mut Handle) -> Status =
            sym!("LiteRtCreateOptions");
        let set_accelerators: unsafe extern "C" fn(Handle, i32) -> Status =
            sym!("LiteRtSetOptionsHardwareAccelerators");
        let create_compiled: unsafe extern "C" fn(Handle, Handle, Handle, *mut Handle) -> Status =
            sym!("LiteRtCreateCompiledModel");
        let get_signature: unsafe extern "C" fn(Handle, usize, *mut Handle) -> Status =
            sym!("LiteRtGetModelSignature");
        let num_inputs: unsafe extern "C" fn(Handle, *mut usize) -> Status =
            sym!("LiteRtGetNumSignatureInputs");
        let num_outputs: unsafe extern "C" fn(Handle, *mut usize) -> Status =
            sym!("LiteRtGetNumSignatureOutputs");
        let input_tensor: unsafe extern "C" fn(Handle, usize, *mut Handle) -> Status =
            sym!("LiteRtGetSignatureInputTensorByIndex");
        let output_tensor: unsafe extern "C" fn(Handle, usize, *mut Handle) -> Status =
            sym!("LiteRtGetSignatureOutputTensorByIndex");
        let ranked_type: unsafe extern "C" fn(Handle, *mut RankedTensorType) -> Status =
            sym!("LiteRtGetRankedTensorType");
        let input_requirements: unsafe extern "C" fn(Handle, usize, usize, *mut Handle) -> Status =
            sym!("LiteRtGetCompiledModelInputBufferRequirements");
        let output_requirements: unsafe extern "C" fn(Handle, usize, usize, *mut Handle) -> Status =
            sym!("LiteRtGetCompiledModelOutputBufferRequirements");
        let create_buffer: unsafe extern "C" fn(
            Handle,
            *const RankedTensorType,
            Handle,
            *mut Handle,
        ) -> Status = sym!("LiteRtCreateManagedTensorBufferFromRequirements");
        let api = Api {
            destroy_environment: sym!("LiteRtDestroyEnvironment"),
            destroy_model: sym!("LiteRtDestroyModel"),
            destroy_compiled: sym!("LiteRtDestroyCompiledModel"),
            destroy_buffer: sym!("LiteRtDestroyTensorBuffer"),
            lock: sym!("LiteRtLockTensorBuffer"),
            unlock: sym!("LiteRtUnlockTensorBuffer"),
            packed_size: sym!("LiteRtGetTensorBufferPackedSize"),
            run: sym!("LiteRtRunCompiledModel"),
            _lib: lib,
        };
        let mut this = LiteRt {
            api,
            env: ptr::null_mut(),
            model: ptr::null_mut(),
            compiled: ptr::null_mut(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            order: (0, 0),
            side: 0,
            _bytes: bytes,
        };
        // SAFETY: each call follows the C API's contract: out-pointers are valid, handles come
        // from the calls before, and `this` (whose Drop releases them) owns every handle as
        // soon as it exists, so an early return cannot leak or double-free.
        unsafe {
            check(
                &lib_name,
                "environment",
                create_environment(0, ptr::null(), &mut this.env),
            )?;
            check(
                &what,
                "reading the model",
                create_model(
                    this.env,
                    this._bytes.as_ptr().cast(),
                    this._bytes.len(),
                    &mut this.model,
                ),
            )?;
            // Owned by the caller per the header, but some runtime versions take it over with
            // the compiled model: it is left alive (a few bytes, once per model load).
            let mut compile_options: Handle = ptr::null_mut();
            check(&lib_name, "options", create_options(&mut compile_options))?;
            check(
                &lib_name,
                "selecting the accelerator",
                set_accelerators(compile_options, options.accelerator.bits()),
            )?;
            check(
                &what,
                "compiling the model",
                create_compiled(this.env, this.model, compile_options, &mut this.compiled),
            )?;
            let mut signature: Handle = ptr::null_mut();
            check(
                &what,
                "signature",
                get_signature(this.model, 0, &mut signature),
            )?;
            let (mut n_in, mut n_out) = (0usize, 0usize);
            check(&what, "inputs", num_inputs(signature, &mut n_in))?;
            check(&what, "outputs", num_outputs(signature, &mut n_out))?;
            if n_in != 1 || n_out != 2 {
                return Err(Error::invalid_input(format!(
                    "model file {what}: {n_in} inputs and {n_out} outputs, expected 1 and 2 \
                     (a BlazeFace model)"
                )));
            }
            let mut sizes = Vec::new();
            for (input, index) in std::iter::once(true)
                .chain([false, false])
                .zip([0usize, 0, 1])
            {
                let mut tensor: Handle = ptr::null_mut();
                let mut requirements: Handle = ptr::null_mut();
                let mut ty = RankedTensorType([0; 256]);
                if input {
                    check(
                        &what,
                        "input tensor",
                        input_tensor(signature, index, &mut tensor),
                    )?;
                    check(
                        &what,
                        "input requirements",
                        input_requirements(this.compiled, 0, index, &mut requirements),
                    )?;
                } else {
                    check(
                        &what,
                        "output tensor",
                        output_tensor(signature, index, &mut tensor),
                    )?;
                    check(
                        &what,
                        "output requirements",
                        output_requirements(this.compiled, 0, index, &mut requirements),
                    )?;
                }
                check(&what, "tensor type", ranked_type(tensor, &mut ty))?;
                let mut buffer: Handle = ptr::null_mut();
                check(
                    &what,
                    "tensor buffer",
                    create_buffer(this.env, &ty, requirements, &mut buffer),
                )?;
                if input {
                    this.inputs.push(buffer);
                } else {
                    this.outputs.push(buffer);
                }
                let mut size = 0usize;
                check(
                    &what,
                    "buffer size",
                    (this.api.packed_size)(buffer, &mut size),
                )?;
                sizes.push(size / 4);
            }
            // Identify the model from its buffer sizes (f32 values): the input is side² x 3,
            // the outputs n x 16 box values and n scores, in either order.
            let side = ((sizes[0] / 3) as f64).sqrt() as usize;
            let (boxes, order) = if sizes[1] == sizes[2] * 16 {
                (sizes[2], (0, 1))
            } else if sizes[2] == sizes[1] * 16 {
                (sizes[1], (1, 0))
            } else {
                (0, (0, 0))
            };
            if side * side * 3 != sizes[0] {
                return Err(Error::invalid_input(format!(
                    "model file {what}: input of {} values is not a square RGB image",
                    sizes[0]
                )));
            }
            Variant::from_shapes(side, boxes)
                .map_err(|e| Error::invalid_input(format!("model file {what}: {e}")))?;
            this.side = side;
            this.order = order;
        }
        Ok(this)
    }

    fn read(&self, buffer: Handle) -> Result<Vec<f32>, Error> {
        let mut size = 0usize;
        let mut at: *mut c_void = ptr::null_mut();
        // SAFETY: `buffer` is one of ours; the locked memory holds `size` bytes of f32 values
        // until it is unlocked, and is copied out before that.
        unsafe {
            check("output", "size", (self.api.packed_size)(buffer, &mut size))?;
            check("output", "lock", (self.api.lock)(buffer, &mut at, 0))?;
            let values = std::slice::from_raw_parts(at.cast::<f32>(), size / 4).to_vec();
            check("output", "unlock", (self.api.unlock)(buffer))?;
            Ok(values)
        }
    }
}

impl Inference for LiteRt {
    fn input_side(&self) -> usize {
        self.side
    }

    fn run(&mut self, input: &[f32]) -> Result<(Vec<f32>, Vec<f32>), Error> {
        let buffer = self.inputs[0];
        let mut at: *mut c_void = ptr::null_mut();
        // SAFETY: the input buffer holds side² x 3 f32 values (checked at load); `input` is
        // that long (the detector sizes it from `input_side`).
        unsafe {
            assert_eq!(input.len(), self.side * self.side * 3);
            check("input", "lock", (self.api.lock)(buffer, &mut at, 1))?;
            ptr::copy_nonoverlapping(input.as_ptr(), at.cast::<f32>(), input.len());
            check("input", "unlock", (self.api.unlock)(buffer))?;
            check(
                "model",
                "run",
                (self.api.run)(
                    self.compiled,
                    0,
                    1,
                    self.inputs.as_mut_ptr(),
                    2,
                    self.outputs.as_mut_ptr(),
                ),
            )?;
        }
        let (b, s) = self.order;
        Ok((self.read(self.outputs[b])?, self.read(self.outputs[s])?))
    }
}

impl Drop for LiteRt {
    fn drop(&mut self) {
        // SAFETY: every non-null handle came from the runtime and is released once, in the
        // reverse order of creation.
        unsafe {
            for b in self.inputs.drain(..).chain(self.outputs.drain(..)) {
                (self.api.destroy_buffer)(b);
            }
            if !self.compiled.is_null() {
                (self.api.destroy_compiled)(self.compiled);
            }
            if !self.model.is_null() {
                (self.api.destroy_model)(self.model);
            }
            if !self.env.is_null() {
                (self.api.destroy_environment)(self.env);
            }
        }
    }
}
