# Sourced by closed_loop_state.sh and closed_loop_reground_u3.sh, with R set and stage_timer.sh sourced: the
# standard profile's chain with observation.environment_state recorded (dataset, base policy, its rollouts,
# a world model that predicts the state, a state success model). Each stage is skipped when its output exists.
V=.venv/bin/vla-rft
P="--profile standard"
S="--set world_model.environment_state=true"
J="--set success_model.input=state --set success_model.imagined_steps=0"
t prepare-data $R/dataset $V prepare-data $P --out $R/dataset
t pretrain-policy $R/policy_bc $V pretrain-policy $P --dataset $R/dataset --out $R/policy_bc
t collect-rollouts $R/rollouts $V collect-rollouts $P --policy $R/policy_bc --out $R/rollouts
t train-world-model $R/world_model $V train-world-model $P $S --dataset $R/dataset --out $R/world_model
t train-success-model $R/success_model_state $V train-success-model $P $J \
  --dataset $R/dataset --dataset $R/rollouts --out $R/success_model_state
