"""Neural-network components built in the chapters and reused by later ones.

- :mod:`dlbook.nn.conv`: convolution output size, receptive field, im2col convolution (chapter 3)
- :mod:`dlbook.nn.recurrent`: RNN, LSTM and GRU cells from their equations (chapters 4 and 5)
- :mod:`dlbook.nn.attention`: scaled dot-product and multi-head attention (chapter 6)
- :mod:`dlbook.nn.transformer`: positional encoding, LayerNorm, feed-forward, encoder layer (chapter 7)
  and the decoder layer with cross-attention, its stack and the encoder-decoder (chapter 19)
- :mod:`dlbook.nn.bert`: BERT embeddings and encoder assembled from the above (chapter 8)
- :mod:`dlbook.nn.llama`: RMSNorm, rotary embeddings, SwiGLU, grouped-query attention, a Llama
  decoder with a KV cache (chapter 17)
"""
