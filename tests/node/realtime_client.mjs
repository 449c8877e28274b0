// The official openai Node SDK's Realtime WebSocket client (GA `openai/realtime/ws`, or the retired beta's
// `openai/beta/realtime/ws`) talking to voxgate, as a JavaScript server would. Driven by
// tests/integration/test_node_sdk.py:
//
//   node realtime_client.mjs BASE_URL API_KEY ga|beta tool|audio [PCM_FILE]
//
// tool:  a client function tool; the model's call, our output, and the reply that uses it
// audio: 24 kHz pcm16 speech appended with server VAD; the transcript, and the reply's audio and transcript
//
// Prints one JSON object: what came back, every event type in order, and any `error` event. The SDK only
// speaks wss:// (it sets the protocol itself): the gateway runs with TLS and NODE_EXTRA_CA_CERTS trusts it.
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';
import { OpenAIRealtimeWS as BetaRealtimeWS } from 'openai/beta/realtime/ws';

const [baseURL, apiKey, dialect, scenario, pcmFile] = process.argv.slice(2);
const beta = dialect === 'beta';
const client = new OpenAI({ apiKey, baseURL: `${baseURL}/v1` });
const rt = beta
  ? new BetaRealtimeWS({ model: 'gpt-4o-realtime-preview' }, client)
  : new OpenAIRealtimeWS({ model: 'gpt-realtime' }, client);

const result = { events: [], errors: [] };
const finish = (code) => {
  console.log(JSON.stringify(result));
  rt.close();
  process.exit(code);
};
setTimeout(() => { result.errors.push('timed out'); finish(1); }, 60000);
rt.on('event', (event) => result.events.push(event.type));
rt.on('error', (error) => result.errors.push(error.error ?? String(error.message ?? error)));

const WEATHER = {
  type: 'function',
  name: 'get_weather',
  description: 'Get the current weather for a city.',
  parameters: { type: 'object', properties: { city: { type: 'string', description: 'City name' } },
    required: ['city'] },
};

function sessionUpdate(audio) {
  if (beta) {
    return audio
      ? { modalities: ['audio', 'text'], input_audio_format: 'pcm16', output_audio_format: 'pcm16',
          input_audio_transcription: { model: 'whisper-1' },
          turn_detection: { type: 'server_vad', silence_duration_ms: 500 } }
      : { modalities: ['text'], tools: [WEATHER], tool_choice: 'auto' };
  }
  return audio
    ? { type: 'realtime', output_modalities: ['audio'],
        audio: { input: { format: { type: 'audio/pcm', rate: 24000 }, transcription: { model: 'whisper-1' },
                          turn_detection: { type: 'server_vad', silence_duration_ms: 500 } },
                 output: { format: { type: 'audio/pcm', rate: 24000 } } } }
    : { type: 'realtime', output_modalities: ['text'], tools: [WEATHER], tool_choice: 'auto' };
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function tool() {
  rt.send({ type: 'session.update', session: sessionUpdate(false) });
  rt.send({ type: 'conversation.item.create', item: { type: 'message', role: 'user',
    content: [{ type: 'input_text', text: "What's the weather like in Paris?" }] } });
  rt.send({ type: 'response.create' });
  let calls = 0;
  rt.on('response.done', (event) => {
    const output = event.response.output ?? [];
    const call = output.find((item) => item.type === 'function_call');
    if (call && calls === 0) {
      calls += 1;
      result.call = { name: call.name, arguments: JSON.parse(call.arguments), status: event.response.status };
      rt.send({ type: 'conversation.item.create', item: { type: 'function_call_output', call_id: call.call_id,
        output: JSON.stringify({ city: 'Paris', temperature_c: 18, conditions: 'sunny' }) } });
      rt.send({ type: 'response.create' });
      return;
    }
    const message = output.find((item) => item.type === 'message');
    result.reply = message?.content?.map((part) => part.text ?? part.transcript ?? '').join('');
    result.status = event.response.status;
    finish(0);
  });
}

async function audio() {
  rt.send({ type: 'session.update', session: sessionUpdate(true) });
  const pcm = readFileSync(pcmFile);
  result.audio_bytes = 0;
  rt.on(beta ? 'response.audio.delta' : 'response.output_audio.delta', (event) => {
    result.audio_bytes += Buffer.from(event.delta, 'base64').length;
  });
  rt.on('conversation.item.input_audio_transcription.completed', (event) => { result.heard = event.transcript; });
  rt.on(beta ? 'response.audio_transcript.done' : 'response.output_audio_transcript.done', (event) => {
    result.said = event.transcript;
  });
  rt.on('response.done', (event) => {
    result.status = event.response.status;
    finish(0);
  });
  const chunk = 24000 * 2 / 10; // 100 ms of pcm16 at 24 kHz
  for (let at = 0; at < pcm.length; at += chunk) {
    rt.send({ type: 'input_audio_buffer.append', audio: pcm.subarray(at, at + chunk).toString('base64') });
    await sleep(20); // five times real time: the gateway takes bursts, a server client sends what it has
  }
}

rt.socket.on('open', () => {
  (scenario === 'tool' ? tool() : audio()).catch((error) => { result.errors.push(String(error)); finish(1); });
});
