# Defaults of the options every recipe shares, sourced by recipes/<corpus>/run.sh before its own
# settings and local/parse_options.sh, so each is an option: --lm-order 4, --num-teachers 10, ...
stage=0
stop_stage=100
stage_timings=true     # false: a run (e.g. one that only refreshes tables) keeps the "Stage timings" rows as they are
nj=2                   # parallel jobs (feature extraction, GMM training and alignment, decoding)
cmd=""                 # GMM alignment jobs: local processes when empty; ../../local/cmd/slurm.sh: a Slurm array
download_dir=download  # where a corpus missing locally is downloaded
download_opts=""       # extra asr-kd download options (stage 0)
prepare_opts=""        # extra asr-kd prepare options (stage 1), e.g. --dev-fraction 0.1
lang_opts=""           # extra asr-kd lang options (stage 3), e.g. --lexicon FILE
# language model and decoding
lm_order=3
lm_weights="5 6 7 8 9 10 11 12 13 14 15 17 19 21 23"   # scored on dev; test uses dev's best
word_ins_penalties="0.0 0.5 1.0"   # scored on dev with each LM weight (Kaldi's score.sh)
decode_opts=""         # extra asr-kd decode options (beams, --device cuda, ...)
test_subset_every=1    # WER on every K-th test utterance only (slow CPU runs; frame accuracy uses all)
# GMM-HMM
mono_gauss=1000        # Gaussians of the monophone system
tri_leaves=2000        # senones (tied triphone states)
tri_gauss=10000        # Gaussians of the triphone system
mono_opts=""           # extra asr-kd gmm mono options (--num-iters, --realign-iters, ...)
tri_opts=""            # extra asr-kd gmm tri options
# DNNs and distillation
speed_perturb=""       # e.g. "0.9 1.0 1.1": the DNNs train on speed-perturbed copies of train, aligned by the GMM
preset=small           # paper (8x2560), cpu (4x1024), small (3x512), tiny
epochs=8
num_teachers=4         # the ensemble; seed 1 is the baseline
temperatures="1 2 5 10"
hard_weight=0.5        # weight of the hard-label term
subset_fraction=0.03   # the paper's 3% experiment
subset_temperature=2
subset_epochs=20       # the subset is small: more passes, so the hard-target model can overfit (early stopping)
nnet_opts=""           # extra asr-kd nnet train options (--device cuda, --max-frames-per-epoch N, ...)
stream_frames=false    # true: the DNNs stream their training frames from shards in data/shards/ (memory bounded
                       # by --buffer-frames, not by the corpus) instead of holding them all in each process
teacher_opts=""        # extra options for the teachers only (stage 9), e.g. --newbob-threshold 0
distill_opts=""        # extra options for the distilled students only (stages 11, 12), e.g. --grad-clip 5
dnn_priors=alignment   # senone priors the DNN posteriors are divided by in decoding: alignment (the GMM
                       # alignment's label counts, saved in every model) or posterior (each system's own mean
                       # posterior, as Kaldi's nnet; ../../local/tune_priors.sh compares them on dev)
priors_utterances=1500 # posterior: training utterances the mean posterior is taken over (with --stream-frames
                       # true, only those are read, from the frame shards)
