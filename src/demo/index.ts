export { demoRoutes } from './routes.ts';
export { seedDemo, DEMO_APP_ID, type DemoSeed } from './seed.ts';
