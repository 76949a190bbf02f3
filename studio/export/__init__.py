"""Export: a run's adapter or a merged model as the formats people run — safetensors, GGUF
(llama.cpp's converter, k-quants), a LoRA GGUF and an Ollama Modelfile — each checked for parity
against the tuned model, written whole or not at all (service.py). Reads run folders; never trains.
"""
