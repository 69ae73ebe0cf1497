#!/usr/bin/env bash
# Prepares, beside the repository and git-ignored, what benchmarks/gpu_run.sh needs on
# a lent GPU machine, so a session spends its device minutes measuring, not packing.
# Run it here (it needs the package registry and ../shared), then with the device tool:
#
#   bash benchmarks/gpu_prepare.sh
#   run  bash benchmarks/gpu_run.sh gpu    carry .whl .devdata   (about 6 minutes)
#   run  bash benchmarks/gpu_run.sh cpu    carry .ovpkg          (within 30 s of the first:
#                                                                 /tmp survives, carries not)
#
# It makes:
#   .whl/     wheels the device image lacked (it had PyTorch and CUDA, numpy, onnx,
#             einops and pytest), for its Python ($PYVER, default 3.12), at the
#             versions installed here, so the device runs what the suite tested
#             (checked: they install and import under a local Python 3.12);
#   .ovpkg/   OpenVINO's CPU runtime without its GPU and NPU plugins and non-ONNX
#             frontends (59 MB as a wheel, about 21 MB so), and openvino-telemetry;
#   .devdata/ htdemucs_kwargs.json and the test songs' mixtures as ../shared has them,
#             and their stems as Ogg Vorbis (training data for structured_weights.py).
# The songs are MUSDB18 (research use only, ../shared/eval/SOURCES.md): .gitignore
# keeps all three out of commits; delete them when the run is done.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PYVER=${PYVER:-3.12}
LIMIT_MIB=64 # the device tool's limit on carried paths, per call
SHARED=../shared

version() { "$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
wheels_for_device() { # name...: the device Python's binary wheels, else a local pure build
  local name spec
  for name in "$@"; do
    spec="$name==$(version "$name")"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$dest" \
      --python-version "$PYVER" --implementation cp --abi "cp${PYVER/./}" --abi abi3 \
      --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any "$spec" ||
      "$PYTHON" -m pip wheel -q --no-deps -w "$dest" "$spec"
  done
}

echo "wheels (.whl/)"
rm -rf .whl && mkdir .whl && dest=.whl
wheels_for_device demucs julius lameenc soundfile cffi pycparser soxr pedalboard pyzmq mido \
  librosa audioread pooch decorator platformdirs omegaconf antlr4-python3-runtime lazy_loader \
  msgpack pyyaml

echo "OpenVINO, stripped to its CPU runtime (.ovpkg/)"
rm -rf .ovpkg && mkdir .ovpkg
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
dest=$staging wheels_for_device openvino
dest=.ovpkg wheels_for_device openvino-telemetry
"$PYTHON" -m zipfile -e "$staging"/openvino-*.whl "$staging/unpacked"
(
  cd "$staging/unpacked/openvino/libs"
  rm -f cache.json libopenvino_intel_gpu_plugin.so libopenvino_intel_npu_plugin.so \
    libopenvino_{jax,paddle,pytorch,tensorflow,tensorflow_lite,gguf}_frontend.so*
)
tar cJf .ovpkg/ov-stripped.tar.xz -C "$staging/unpacked" .

echo "songs (.devdata/)"
rm -rf .devdata && mkdir -p .devdata/shared/models .devdata/shared/eval .devdata/stems
cp "$SHARED/models/htdemucs_kwargs.json" .devdata/shared/models/
"$PYTHON" - "$SHARED/eval/musdb18-7-test" .devdata <<'EOF'
import shutil
import sys
from pathlib import Path

import soundfile

songs, out = Path(sys.argv[1]), Path(sys.argv[2])
for song in sorted(p for p in songs.iterdir() if (p / "mixture.flac").is_file()):
    mixtures = out / "shared/eval/musdb18-7-test" / song.name
    mixtures.mkdir(parents=True)
    shutil.copy(song / "mixture.flac", mixtures)
    stems = out / "stems" / song.name
    stems.mkdir(parents=True)
    for stem in ("drums", "bass", "other", "vocals"):
        audio, rate = soundfile.read(song / f"{stem}.flac", dtype="float32")
        # Vorbis at a low quality: 4x smaller than FLAC, and plenty for 300 training steps.
        soundfile.write(stems / f"{stem}.ogg", audio, rate, "VORBIS", compression_level=0.8)
EOF

first=$(du -scm .whl .devdata | tail -n 1 | cut -f1)
second=$(du -scm .ovpkg | tail -n 1 | cut -f1)
echo "first call carries ${first} MiB (.whl .devdata), the second ${second} MiB (.ovpkg);" \
  "each must stay under ${LIMIT_MIB}"
[ "$first" -lt "$LIMIT_MIB" ] && [ "$second" -lt "$LIMIT_MIB" ]
