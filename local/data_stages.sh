# The data stages every corpus recipe shares, sourced by recipes/<corpus>/run.sh after it sets
# corpus and corpus_dir (and optionally download_opts, prepare_opts, lang_opts, splits, vocab_split); the other
# options come from local/defaults.sh.
#   0 download (skipped when the corpus is found)   1 lhotse manifests
#   2 fbank features (+ speed-perturbed train with --speed-perturb)   3 lang (lexicon, L.fst)
splits=${splits:-"train dev test"}
vocab_split=${vocab_split:-train}
download_opts=${download_opts:-}   # asr-kd download options (librispeech: --librispeech-parts ...)
prepare_opts=${prepare_opts:-}
lang_opts=${lang_opts:-}

if stage_on 0; then
  if [ -e "$corpus_dir" ]; then
    log "Stage 0: $corpus found at $corpus_dir"
  else
    log "Stage 0: $corpus not at $corpus_dir; downloading into $download_dir"
    corpus_dir=$(asr-kd download $corpus "$download_dir" $download_opts | tail -n 1)
  fi
fi
if stage_on 1; then
  # Not found where expected: use (or fetch) the copy in $download_dir; a no-op when it is there.
  [ -e "$corpus_dir" ] || corpus_dir=$(asr-kd download $corpus "$download_dir" $download_opts | tail -n 1)
  log "Stage 1: lhotse manifests for $corpus from $corpus_dir"
  asr-kd prepare $corpus "$corpus_dir" data/manifests $prepare_opts
fi

if stage_on 2; then
  for s in $splits; do need "1 (manifests)" data/manifests/${corpus}_cuts_$s.jsonl.gz; done
  log "Stage 2: 40-dim fbank"
  asr-kd fbank data/manifests data/fbank --corpus $corpus --splits $splits --num-jobs $nj
  if [ -n "$speed_perturb" ]; then
    log "Stage 2: speed-perturbed copies of train (factors $speed_perturb) for the DNNs, and their fbank"
    asr-kd perturb data/manifests/${corpus}_cuts_train.jsonl.gz data/manifests/${corpus}_cuts_train_sp.jsonl.gz \
      --factors $speed_perturb
    asr-kd fbank data/manifests data/fbank --corpus $corpus --splits train_sp --num-jobs $nj
  fi
fi

if stage_on 3; then
  need "1 (manifests)" data/manifests/${corpus}_cuts_$vocab_split.jsonl.gz
  log "Stage 3: lang (lexicon, phones, words, L.fst)"
  report=""
  for s in $splits; do [ "$s" = "$vocab_split" ] || report="$report $s=data/manifests/${corpus}_cuts_$s.jsonl.gz"; done
  asr-kd lang data/lang --vocab-cuts data/manifests/${corpus}_cuts_$vocab_split.jsonl.gz \
    --report-cuts $report $lang_opts
fi
