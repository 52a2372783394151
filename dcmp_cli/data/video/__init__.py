"""Video files through the ffmpeg binary of the ``imageio-ffmpeg`` wheel, one module per job.

* :mod:`.probe`: what a file holds (size, exact frame rate, frame count, rotation,
  colour tags, pixel aspect ratio, audio, the length its container declares).
* :mod:`.container`: the length an MP4/MOV index declares for its video track.
* :mod:`.decode`: streaming frames in (:class:`~.decode.FrameReader`), with a check
  that the whole selected range could be read.
* :mod:`.encode`: streaming frames out into an atomically written file, with the
  source's audio, metadata, rotation, colour and pixel aspect ratio.
* :mod:`.files`: which paths are videos.
* :mod:`.testclips`: synthetic hazy clips for tests and benchmarks.
* :mod:`.errors` and :mod:`.ffmpeg`: what they share.
"""
