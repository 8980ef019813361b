#!/usr/bin/env bash
# Rebuild the README gallery with fgfem itself, from the two public-domain photos in examples/.
# Usage: bash docs/gallery/make_gallery.sh [WEIGHTS]   (default: the shipped weights/default.safetensors)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=docs/gallery
weights=(${1:+--weights "$1"})
face=examples/astronaut.png

# The paper's figure: one row per AU, one column per change.
fgfem interpolate "$face" --grid --grid-aus 4,5,7,12,15,20 --steps -1,0,1,2 --size 112 \
  "${weights[@]}" -o "$out/grid.png" --force
# A multi-AU edit (smile with cheeks raised, brows up), before and after.
fgfem interpolate "$face" --au 12=+2 --au 6=+1 --au 1=+1 --steps 0,1 --size 160 \
  "${weights[@]}" -o "$out/multi.png" --force
# The paper's continuous editing as an animation.
fgfem interpolate "$face" --au 12=+2 --steps 0,0.5,0.75,1,1.25 --boomerang --fps 4 --size 160 \
  "${weights[@]}" -o "$out/smile.gif" --force
# Expression transfer: the Mona Lisa's expression on the astronaut.
fgfem interpolate "$face" --target examples/monalisa.jpg --steps 0,1 --size 160 \
  "${weights[@]}" -o "$out/transfer.png" --force
