#!/usr/bin/env bash
# Rebuild the README gallery and the model card's contact sheets with fgfem itself, from the two
# public-domain works in examples/ (a NASA portrait, a US Navy portrait, a painting).
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
# Contact sheets for the model card: every AU at -1, 0 and +1 on the two photos, a grey copy of the first and the
# painting.
all_aus=1,2,4,5,6,7,9,10,12,14,15,17,20,23,25,26,45
grey_dir=$(mktemp -d)
trap 'rm -rf "$grey_dir"' EXIT
python -c "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('L').save(sys.argv[2])" \
  "$face" "$grey_dir/astronaut_grey.png"
for input in "$face" "$grey_dir/astronaut_grey.png" examples/hopper.jpg examples/monalisa.jpg; do
  name=$(basename "${input%.*}")
  fgfem interpolate "$input" --grid --grid-aus "$all_aus" --steps -1,0,1 --size 112 \
    "${weights[@]}" -o "$out/contact_$name.png" --force
done
