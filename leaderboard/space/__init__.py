"""The leaderboard Space: ``app.py`` (gradio) over ``board.py`` (pure pandas); ``immunobench publish`` uploads this folder."""
