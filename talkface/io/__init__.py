"""File formats and safe writing shared by every stage: audio, meshes, animations, glTF export, atomic files and
the live stream's wire formats (raw PCM in, frame records out)."""

from talkface.io.animation import Animation, load_animation, save_animation
from talkface.io.audio import (
    SAMPLE_RATE,
    check_audio_file,
    check_not_silent,
    check_waveform,
    load_audio,
    normalize_waveform,
    num_motion_frames,
    resample,
    to_float32,
    write_wav,
)
from talkface.io.fileio import (
    atomic_path,
    check_output_path,
    check_writable_folder,
    temp_path_for,
    write_bytes_atomic,
    write_text_atomic,
)
from talkface.io.frames import PcmDecoder, encode_frame, encode_frames, read_frames, record_size
from talkface.io.gltf import MorphBasis, build_gltf, morph_basis, reconstruction_error, vertex_normals, write_gltf
from talkface.io.mesh import Template, check_vertices, load_mesh, obj_text, save_obj_sequence

__all__ = [
    "SAMPLE_RATE",
    "Animation",
    "atomic_path",
    "build_gltf",
    "check_audio_file",
    "check_not_silent",
    "check_output_path",
    "check_vertices",
    "check_waveform",
    "check_writable_folder",
    "encode_frame",
    "encode_frames",
    "load_animation",
    "load_audio",
    "load_mesh",
    "morph_basis",
    "MorphBasis",
    "normalize_waveform",
    "num_motion_frames",
    "obj_text",
    "PcmDecoder",
    "read_frames",
    "reconstruction_error",
    "record_size",
    "resample",
    "save_animation",
    "save_obj_sequence",
    "temp_path_for",
    "Template",
    "to_float32",
    "vertex_normals",
    "write_bytes_atomic",
    "write_gltf",
    "write_text_atomic",
    "write_wav",
]
