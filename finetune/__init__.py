"""Fine-tuning: chat logs (or a `datasets` source) to teacher-graded training data, validated,
then trained by a local LoRA (TRL + PEFT) or an OpenAI / Azure OpenAI job and registered as a
candidate chat model. Embedding-model fine-tuning lives in `finetune.embedding`."""
