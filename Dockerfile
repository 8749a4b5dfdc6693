# NaturalL2S Studio: the comparison app on the shipped checkpoints, offline, on port 7860 of every interface.
#
#   docker build -t naturall2s-studio .
#   docker run --rm -p 7860:7860 naturall2s-studio                      # the studio: http://localhost:7860
#   docker run --rm -v /path/to/shared/data:/data:ro -e NATURALL2S_SHARED_DATA=/data \
#       naturall2s-studio python -m pytest -q tests                      # the test suite in the same image
#
# Also the Hugging Face Spaces image (docs/spaces-README.md holds the Space's header block). Nothing is
# downloaded at run time: the checkpoints are in checkpoints/, the ASR, speaker-encoder and face-landmark
# models ship inside their wheels.
FROM python:3.11-slim

# opencv / mediapipe need these shared libraries; naturall2s's own ffmpeg comes with the imageio-ffmpeg wheel, and
# Gradio's streaming audio player (the Live tab) needs one on PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libgomp1 ffmpeg \
    && rm -rf /var/lib/apt/lists/*

# Spaces run the image as uid 1000
RUN useradd --create-home --uid 1000 user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /home/user/app

# CPU wheels of torch (the default index's torch carries CUDA libraries: gigabytes this image never uses)
COPY --chown=user requirements.txt .
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        --extra-index-url https://pypi.org/simple -r requirements.txt

COPY --chown=user . .
USER user
EXPOSE 7860
CMD ["python", "app.py"]
