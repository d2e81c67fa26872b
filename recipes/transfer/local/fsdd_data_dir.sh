#!/usr/bin/env bash
# usage: local/fsdd_data_dir.sh FSDD_DIR TAKES OUT_DIR
# A Kaldi data dir (wav.scp, text, utt2spk, spk2utt) of the Free Spoken Digit Dataset: takes 0 to
# TAKES-1 of every digit by every speaker (all 50: TAKES=50), the digits as words ("zero" ... "nine").
# The audio stays where it is (8 kHz flac); the import resamples it to the model's rate. Utterance
# ids start with the speaker, as Kaldi's sorting wants. Written to OUT_DIR.tmp, then renamed.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 FSDD_DIR TAKES OUT_DIR" >&2; exit 1; }
fsdd=$1 takes=$2 out=$3
[ -d "$fsdd/recordings" ] || { echo "$0: $fsdd/recordings: no such directory (the FSDD corpus)" >&2; exit 1; }
[[ $takes =~ ^[0-9]+$ ]] && [ "$takes" -ge 1 ] || { echo "$0: TAKES must be a positive number, not '$takes'" >&2; exit 1; }
fsdd=$(cd "$fsdd" && pwd)
words=(zero one two three four five six seven eight nine)
tmp=$out.tmp
rm -rf "$tmp"; mkdir -p "$tmp"
for f in "$fsdd"/recordings/*_*_*.*; do
  base=$(basename "$f"); base=${base%.*}             # {digit}_{speaker}_{take}
  IFS=_ read -r digit speaker take <<< "$base"
  [ "$take" -lt "$takes" ] || continue
  utt=$(printf '%s-%s-%02d' "$speaker" "$digit" "$take")
  echo "$utt $f" >> "$tmp/wav.scp"
  echo "$utt ${words[$digit]}" >> "$tmp/text"
  echo "$utt $speaker" >> "$tmp/utt2spk"
done
for x in wav.scp text utt2spk; do LC_ALL=C sort -o "$tmp/$x" "$tmp/$x"; done
awk '{ u[$2] = u[$2] " " $1 } END { for (s in u) print s u[s] }' "$tmp/utt2spk" | LC_ALL=C sort > "$tmp/spk2utt"
rm -rf "$out"; mv "$tmp" "$out"
echo "$out: $(wc -l < "$out/wav.scp") utterances, $(wc -l < "$out/spk2utt") speakers"
